"""Resource binding (RFC 6120 §7): offered once authenticated, with the
modules' stream features; a bind makes the stream carry a new
:class:`~vinespy.stream.session.ClientSession`, in the session table."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from ... import ns
from ...errors import StanzaError, StreamError
from ...jid import JID, JIDError
from ...xml import Element, child, error_reply, reply, serialize
from ..session import ClientSession

if TYPE_CHECKING:
    from ..client import C2S

log = logging.getLogger("vinespy.c2s")

_IQ = f"{{{ns.CLIENT}}}iq"
_BIND = f"{{{ns.BIND}}}bind"
_RESOURCE = f"{{{ns.BIND}}}resource"


class Bind:
    def offer(self, stream: C2S) -> str:
        if stream.user is None:
            return ""
        # RFC 3921 session establishment, optional since RFC 6121 (old clients).
        parts = [f"<bind xmlns='{ns.BIND}'/>",
                 f"<session xmlns='{ns.SESSION}'><optional/></session>"]
        if stream.host is not None:
            parts.extend(stream.host.stream_features(stream))    # modules' (rosterver...)
        return "".join(parts)

    async def handle(self, stream: C2S, el: Element) -> bool | None:
        if stream.user is None or el.tag != _IQ or el.get("type") != "set" \
                or len(el) != 1 or el[0].tag != _BIND:
            return None
        try:
            full = await self._bind(stream, el[0])
        except StanzaError as exc:
            stream.write(serialize(error_reply(el, exc)))
            return False
        answer = reply(el)
        child(child(answer, ns.BIND, "bind"), ns.BIND, "jid", str(full))
        assert stream.session is not None
        stream.session.send(answer)
        return False

    async def _bind(self, stream: C2S, bind: Element) -> JID:
        assert stream.user is not None
        res_el = bind.find(_RESOURCE)
        wanted = (res_el.text or "").strip() if res_el is not None else ""
        if wanted:
            try:
                full = stream.user.with_resource(wanted)
            except JIDError as exc:
                raise StanzaError("bad-request", f"resource: {exc}") from None
        else:
            full = stream.user.with_resource(f"vinespy-{secrets.token_hex(4)}")
        async with stream.server.sessions.binding(stream.user):
            await self._take(stream, full)
        log.info("%s bound %s", stream.peer, full)
        return full

    async def _take(self, stream: C2S, full: JID) -> None:
        """Check and bind ``full`` (under the account's binding lock)."""
        if stream.closing:
            raise StanzaError("not-allowed", "the stream is closing")
        sessions, cfg = stream.server.sessions, stream.cfg
        # In a cluster, the resources bound on other nodes count too (conflict,
        # max_resources_per_account): read them now, not from the cache.
        await sessions.load((full.bare,), fresh=True)
        old = sessions.get(full)
        if old is not None and cfg.resource_conflict == "refuse":
            raise StanzaError("conflict", "that resource is already bound")
        if old is None and sessions.count(full.bare) >= cfg.max_resources_per_account:
            raise StanzaError("resource-constraint",
                              f"at most {cfg.max_resources_per_account} resources per account")
        if old is not None:
            # RFC 6120 §7.7.2.2: the new session wins, the old one is told why.
            old.close(StreamError("conflict", "replaced by a new session"))
            if isinstance(old, ClientSession):
                await old.unbind()
        assert stream.host is not None
        session = ClientSession(stream.server, stream.host, full, stream.id, stream)
        sessions.bind(session)
        session.bound = True
        stream.carry(session)
