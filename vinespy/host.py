"""A served domain: its event bus, its storage and its loaded modules."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

from . import ns
from .events import EventBus
from .storage import Storage

if TYPE_CHECKING:
    from .auth.ldap import LdapDirectory
    from .config import HostConfig
    from .modules import Module
    from .router import Router
    from .server import Server
    from .sessions import Sessions
    from .storage.archive import ArchiveStore
    from .storage.pubsub import PubSubStore


# A stanza's tag -> the event fired when it is delivered to a client.
DELIVER = {f"{{{ns.CLIENT}}}{kind}": f"deliver-{kind}" for kind in ("message", "presence", "iq")}
# ... and the event fired when a local session sends it.
PRE = {f"{{{ns.CLIENT}}}{kind}": f"pre-{kind}" for kind in ("message", "presence", "iq")}


class Host:
    def __init__(self, domain: str, config: HostConfig, storage: Storage,
                 router: Router) -> None:
        self.domain = domain
        self.config = config
        self.storage = storage
        self.router = router
        self.bus = EventBus()
        self.modules: dict[str, Module] = {}
        self.pubsub_store: PubSubStore | None = None    # set when it serves pubsub services
        # The users' message archives (XEP-0313), set when it loads the mam
        # module, which opens it at start and closes it at stop.
        self.archive: ArchiveStore | None = None
        # [host.auth] backend = "ldap": the directory that checks passwords
        # (and says who exists, through ``storage``); None: the storage's keys.
        self.directory: LdapDirectory | None = None
        self.server: Server | None = None       # the server serving it (set by the server)
        self.log = logging.getLogger(f"vinespy.host.{domain}")

    @property
    def sessions(self) -> Sessions:
        return self.router.sessions

    def features(self, kind: str = "features") -> list[str]:
        """Every disco feature the loaded modules declare (XEP-0030), once each:
        ``features`` for the server, ``account_features`` for its accounts."""
        out: list[str] = []
        for mod in self.modules.values():
            out.extend(f for f in getattr(mod, kind) if f not in out)
        return out

    def stream_features(self, stream: object = None) -> list[str]:
        """The post-authentication stream features: those the loaded modules
        declare (raw XML snippets, e.g. RFC 6121 §2.6.1 roster versioning),
        then those the ``stream-features`` handlers add to the list for
        ``stream`` (the ClientStream asking, not bound yet)."""
        out: list[str] = []
        for mod in self.modules.values():
            out.extend(f for f in mod.stream_features if f not in out)
        if stream is not None and self.bus.has("stream-features"):
            self.bus.fire_sync("stream-features", stream, out)
        return out

    def hooked(self, events: Mapping[str, str]) -> dict[str, str]:
        """Of ``events`` (tag -> event: :data:`DELIVER`, :data:`PRE`), those
        some module hooks: what a session checks on each stanza it writes or
        sends (empty: nothing to fire, nothing to look up)."""
        return {tag: event for tag, event in events.items() if self.bus.has(event)}

    def module(self, name: str) -> Any:
        return self.modules.get(name)
