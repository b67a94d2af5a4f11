"""The module framework: every feature plugs in here, the core knows no XEP.

A module is a class with declared attributes and decorated methods; loading
it registers them on its host's EventBus (aioxmpp-style declarations over
Prosody-style events)::

    class Ping(Module):
        '''XEP-0199: XMPP Ping.'''
        name = "ping"
        features = ("urn:xmpp:ping",)

        @iq("get", "urn:xmpp:ping", "ping", to=("host",))
        async def ping(self, ev): return None      # -> empty result

IQ handlers return the payload element (or None for an empty result) and
raise :class:`~vinespy.errors.StanzaError` for protocol errors; the framework
replies. A write the Redis replicas did not confirm
(:class:`~vinespy.storage.NotReplicated`) becomes :func:`unconfirmed`. Any
other exception becomes ``internal-server-error`` with a logged
traceback. ``@hook(event)`` handlers return a non-None value to claim a
stanza.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

from ..errors import StanzaError
from ..events import StanzaEvent
from ..storage import NotReplicated
from ..xml import error_reply, reply

if TYPE_CHECKING:
    from ..host import Host

log = logging.getLogger(__name__)

# Files under vinespy/modules/ holding the built-in modules (a module's
# config name is its class's ``name``; ``iqdispatch`` is the "iq" module).
BUILTIN = ("iqdispatch", "presence", "disco", "ping", "version", "vcard", "private", "last",
           "offline", "roster", "subscription", "blocking", "pubsub", "pep", "carbons", "sm",
           "csi", "caps", "mam")


@dataclass(frozen=True)
class Option:
    """A typed module option with its default and bounds; ``choices``: the
    values a string option may take (anything else is a config error)."""

    type: type
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None


def iq(type: str, namespace: str, name: str, to: Iterable[str] = ("host",)) -> Callable[..., Any]:
    """Declare an IQ handler for ``<name xmlns=namespace/>`` of ``type``
    addressed to the given destination types (host, self, bare, full)."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__dict__.setdefault("_vinespy_iq", []).extend(
            f"iq-{type}/{t}/{namespace}:{name}" for t in to)
        return fn
    return deco


UNCONFIRMED = ("the change is not yet confirmed by a Redis replica and may be lost if "
               "Redis fails over now: send it again")


def unconfirmed() -> StanzaError:
    """The answer to a change the storage made but its Redis replicas did
    not confirm in time (``[cluster] wait_replicas``): ``<resource-constraint/>``
    type wait, RFC 6120 §8.3.3.18 (the server lacks what it needs to finish
    the request now; the client may retry later)."""
    return StanzaError("resource-constraint", UNCONFIRMED, type="wait")


def hook(event: str, priority: int = 0) -> Callable[..., Any]:
    """Declare a handler for a routing event (docs/routing.md)."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__dict__.setdefault("_vinespy_hooks", []).append((event, priority))
        return fn
    return deco


_REGISTRY: dict[str, type[Module]] = {}


class Module:
    """Base class; subclasses declare ``name`` and are registered by it."""

    name: ClassVar[str] = ""
    xep: ClassVar[str] = ""
    features: ClassVar[tuple[str, ...]] = ()           # disco#info of the server
    account_features: ClassVar[tuple[str, ...]] = ()   # disco#info of each account
    # (category, type) identities of each account next to account/registered
    # (XEP-0163 §6.1: pubsub/pep).
    account_identities: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Raw XML snippets offered in <stream:features/> once the client is
    # authenticated (next to bind), e.g. "<ver xmlns='urn:xmpp:features:rosterver'/>".
    stream_features: ClassVar[tuple[str, ...]] = ()
    depends: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[dict[str, Option]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.name:
            _REGISTRY[cls.name] = cls

    def __init__(self, host: Host) -> None:
        self.host = host
        self.log = logging.getLogger(f"vinespy.modules.{self.name}")

    def option(self, name: str) -> Any:
        """The value of a declared option: ``[host.options.<module>]`` in the
        config file, else the declared default."""
        configured = getattr(self.host.config, "options", {}).get(self.name, {})
        return configured.get(name, self.options[name].default)

    async def send(self, stanza: Any) -> None:
        """Route a stanza the server emits (its ``from`` must be set)."""
        await self.host.router.route(stanza, None)

    async def send_many(self, stanzas: list[Any]) -> None:
        """Route several stanzas the server emits, their recipients' routes
        looked up together (one Redis round trip in a cluster)."""
        await self.host.router.route_many(stanzas, None)

    def handlers(self) -> list[tuple[str, Callable[..., Any], int]]:
        out: list[tuple[str, Callable[..., Any], int]] = []
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            if not callable(fn):
                continue
            bound = getattr(self, attr)
            for event in getattr(fn, "_vinespy_iq", ()):
                out.append((event, self._iq_wrapper(bound), 0))
            for event, priority in getattr(fn, "_vinespy_hooks", ()):
                out.append((event, bound, priority))
        return out

    def _iq_wrapper(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def handle(ev: StanzaEvent) -> bool:
            try:
                payload = await fn(ev)
            except StanzaError as exc:
                answer = error_reply(ev.stanza, exc)
            except NotReplicated as exc:
                # Stored on the Redis primary, not yet on a replica: a success
                # the next failover could make a lie. Nothing after the write
                # ran (no notification); the client sends it again.
                self.log.warning("%s on %s: %s", fn.__qualname__, ev.stanza.get("id"), exc)
                answer = error_reply(ev.stanza, unconfirmed())
            except Exception:
                self.log.exception("%s failed on %s", fn.__qualname__, ev.stanza.get("id"))
                answer = error_reply(ev.stanza, StanzaError("internal-server-error"))
            else:
                answer = reply(ev.stanza)
                if payload is not None:
                    answer.append(payload)
            await self.host.router.route(answer, None)
            return True
        handle.__qualname__ = fn.__qualname__
        return handle

    async def start(self) -> None:
        """Called once the server is about to serve."""

    async def stop(self) -> None:
        """Called at shutdown."""


def module_class(name: str) -> type[Module]:
    _import_builtin()
    return _REGISTRY[name]


def available() -> tuple[str, ...]:
    _import_builtin()
    return tuple(sorted(_REGISTRY))


def builtin() -> tuple[str, ...]:
    """The names of the modules that come with vinespy (what a host loads
    when its config names none)."""
    _import_builtin()
    return tuple(sorted(name for name, cls in _REGISTRY.items()
                        if cls.__module__.startswith(f"{__name__}.")))


def _import_builtin() -> None:
    for name in BUILTIN:
        importlib.import_module(f"{__name__}.{name}")


def load(host: Host, names: Iterable[str] | None) -> list[Module]:
    """Instantiate the named modules (dependencies first) and register their
    handlers on ``host.bus``. Unknown names raise ValueError."""
    _import_builtin()
    wanted = list(builtin() if names is None else names)
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in chain:
            raise ValueError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in _REGISTRY:
            raise ValueError(f"unknown module {name!r}; known: {', '.join(sorted(_REGISTRY))}")
        for dep in _REGISTRY[name].depends:
            visit(dep, chain + (name,))
        order.append(name)

    for name in ("iq", *wanted):
        visit(name, ())
    mods = []
    for name in order:
        mod = _REGISTRY[name](host)
        for event, handler, priority in mod.handlers():
            host.bus.on(event, handler, priority)
        host.modules[name] = mod
        mods.append(mod)
    return mods
