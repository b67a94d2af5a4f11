"""XEP-0198 stream management: acknowledgements, and sessions that outlive
their connection, resumed on this node or any other of the cluster.

After ``<enable/>`` every stanza written to the client goes through the
session's tap (:meth:`~vinespy.modules.smstate.SMState.write`), which keeps it until the client's
``<a h/>`` covers it. With ``resume='true'``, a connection that is lost
without the client closing its stream leaves the session bound (available,
queuing) for ``[client] resume_timeout`` s. ``<resume/>`` on a new
connection of the same account finds it through the resource its token
names: here it is attached to the new stream; on another node, that node
is asked to hand it over (``cluster/sm-take``) and sends it, queue and all,
in order with the stanzas it forwards after it (``cluster/sm-moved``).
However a session ends, what its client did not acknowledge is not lost:
messages go to offline storage (:meth:`StreamManagement.unbinding`), while
the session is still bound, so that what its senders send after them, which
reaches offline storage only once the session is gone, is stored after them
(RFC 6120 §10.1), whichever node routes it.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

from ..errors import StanzaError, StreamError
from ..fields import SessionField, restore_shared, shared_values
from ..jid import JID, JIDError
from ..rules import sm
from ..stream.session import ClientSession, Held
from ..xml import local_name, parse_stanza, serialize
from . import Module, hook
from .carbons import Carbons, eligible
from .smstate import SMState

if TYPE_CHECKING:
    from ..server import Server
    from ..stream.client import C2S

NS = sm.NS
TAKE_TIMEOUT = 5.0      # s a resumption waits for another node to hand the session over
DRAIN_ROUNDS = 100      # rounds of storing what an ending session is still sent
_RESUMABLE = (None, "connection-timeout")    # stream errors after which it may resume


def _write(carrier: Any, data: bytes) -> None:
    """To the client of a bound session or of a stream not bound yet."""
    if isinstance(carrier, ClientSession):
        carrier.transport.write(data)
    else:
        carrier.write(data)


class StreamManagement(Module):
    """XEP-0198 stream management, version 3."""

    name = "sm"
    xep = "XEP-0198"
    stream_features = ()        # offered by offer(): not over BOSH

    state: SessionField[SMState] = SessionField(SMState)       # this node's, not shared
    # Shared: the node a client resumes on finds the session's token on the
    # routing entry of the resource the token names.
    token = SessionField(str, "", shared=True)

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.waiting: set[ClientSession] = set()      # detached, waiting for their client
        # token -> (stream asking, its future) of resumptions asked of another node
        self.pending: dict[str, tuple[C2S, asyncio.Future[bytes | None]]] = {}

    @property
    def server(self) -> Server:
        srv = self.host.server
        assert srv is not None, "a module runs in a server"
        return srv

    # -- enable, <r/>, <a/> ----------------------------------------------------------
    @hook("stream-features")
    def offer(self, stream: Any, out: list[str]) -> None:
        """Over TCP and WebSocket; BOSH has acknowledgements of its own
        (XEP-0124 §9), and its requests are not a connection to resume."""
        if getattr(stream, "kind", "tcp") != "bosh":
            out.append(f"<sm xmlns='{NS}'/>")

    @hook(f"nonza/{NS}:enable")
    def enable(self, carrier: Any, el: Any) -> bool:
        if not isinstance(carrier, ClientSession) or self.state.get(carrier) is not None:
            _write(carrier, sm.failed("unexpected-request"))   # before bind, or twice
            return True
        if getattr(carrier.transport, "kind", "tcp") == "bosh":
            _write(carrier, sm.failed("feature-not-implemented"))
            return True
        session = carrier
        cfg = session.server.config.client
        token, max_seconds = None, 0
        if el.get("resume") in ("true", "1") and cfg.resume_timeout > 0:
            token = sm.make_token(session.jid.resource)
            max_seconds = math.ceil(cfg.resume_timeout)
            try:
                wanted = int(el.get("max", ""))
                if 0 < wanted < max_seconds:
                    max_seconds = wanted
            except ValueError:
                pass
        st = SMState(session, cfg, token, max_seconds)
        self.state.set(session, st)
        if token is not None:
            self.token.set(session, token)
        session.transport.write(sm.enabled(token, max_seconds))
        session.tap(st.write)
        return True

    @hook(f"nonza/{NS}:r")
    def request(self, carrier: Any, el: Any) -> bool | None:
        st = self.state.get(carrier) if isinstance(carrier, ClientSession) else None
        if st is None:
            return None                 # not enabled: unsupported-stanza-type
        carrier.transport.write(sm.ack(st.h_in))
        return True

    @hook(f"nonza/{NS}:a")
    def ack(self, carrier: Any, el: Any) -> bool | None:
        st = self.state.get(carrier) if isinstance(carrier, ClientSession) else None
        if st is None:
            return None
        try:
            h = sm.parse_h(el.get("h"))
            st.acked(h)
        except sm.TooHigh as exc:
            # XEP-0198 §4: a client acknowledging what it was never sent.
            raise StreamError("undefined-condition", str(exc), app=exc.condition()) from None
        except ValueError as exc:
            raise StreamError("bad-format", f"<a/>: {exc} (XEP-0198 §4)") from None
        return True

    @hook("stream-closing")
    def closing(self, session: ClientSession) -> None:
        """XEP-0198 §4 (since 1.5.2): the server SHOULD tell the client what it
        handled before it closes the stream, so nothing is sent twice."""
        st = self.state.get(session)
        if st is not None:
            session.transport.write(sm.ack(st.h_in))

    # -- a connection lost, a session waiting, a session ended ---------------------
    @hook("transport-lost")
    def lost(self, session: ClientSession) -> bool | None:
        st = self.state.get(session)
        stream = session.transport
        if (st is None or st.token is None or st.closing
                or getattr(stream, "peer_closed", True)):
            return None                 # not resumable, or the client said goodbye
        error = getattr(stream, "error", None)
        if (error.condition if error is not None else None) not in _RESUMABLE:
            return None
        self.wait(session, st)
        return True

    def wait(self, session: ClientSession, st: SMState) -> None:
        """Keep ``session`` bound without a connection for its client's return."""
        st.stop_timer()
        st.requested = False
        session.detach(0)               # what it is sent is in st.out, not in the Held
        st.mirror(True)
        self.waiting.add(session)
        st.timer = asyncio.get_running_loop().call_later(st.max, self.expire, session)

    def expire(self, session: ClientSession) -> None:
        self.log.info("%s was not resumed in time; ending it", session.jid)
        self.waiting.discard(session)
        st = self.state.get(session)
        if st is not None:
            st.closing = True           # no resumption from now on
            st.timer = None
        session.close()                 # a Held one: unbound in a task of the server's

    @hook("server-stopping")
    def stopping(self) -> None:
        for session in list(self.waiting):
            self.expire(session)

    @hook("resource-unbinding", priority=-100)
    async def unbinding(self, session: Any) -> None:
        """A session of ours is about to leave the routing table, still bound:
        what its client did not acknowledge is given up (:meth:`give_up`)
        now, and so is what is routed to it meanwhile, round after round,
        until nothing is left. Only then does it leave the table (no await
        in between), so every later message for it, on any node, is stored
        after these: one sender's messages stay in order (RFC 6120 §10.1).
        Last of the handlers (lowest priority): none awaits after it."""
        st = self.state.get(session) if isinstance(session, ClientSession) else None
        if st is None:
            return
        st.closing = True               # no resumption, no handover, no <r/>: it ends
        st.stop_timer()
        st.mirror(False)
        self.waiting.discard(session)
        user = session.jid.bare
        for _ in range(DRAIN_ROUNDS):
            queue = st.out.take()
            if not queue:
                return
            self.log.info("%s ends with %d stanzas unacknowledged", session.jid, len(queue))
            await self.give_up(user, queue, leaving=session)
        self.log.warning("%s: still sent more after %d rounds of storing; the rest is stored "
                         "once it is unbound, maybe after later messages", session.jid,
                         DRAIN_ROUNDS)

    @hook("resource-unbound")
    async def unbound(self, session: Any) -> None:
        """However it ended, nothing it was sent and did not acknowledge is
        lost: see :meth:`give_up`. A session of ours gave up what it held
        while still bound (:meth:`unbinding`); what reached it after that is
        given up here. Another node's session (that node died: this one
        cleans up after it) left what it kept waiting in Redis."""
        st = self.state.get(session) if isinstance(session, ClientSession) else None
        if st is not None:
            st.stop_timer()
            st.mirror(False)
            self.waiting.discard(session)
            queue = st.out.take()
        elif isinstance(session, ClientSession) or not session.fields.get(self.token.key):
            return
        else:
            queue = await self.host.sessions.take_kept(session.fields[self.token.key])
        if queue:
            self.log.info("%s ended with %d stanzas unacknowledged", session.jid, len(queue))
            # Awaited: stored before anything that follows the unbinding (a
            # new session's initial presence flushing offline storage).
            await self.give_up(session.jid.bare, queue)

    async def give_up(self, user: JID, queue: list[bytes], *,
                      leaving: ClientSession | None = None) -> None:
        """Stanzas a client may not have had: messages go to offline storage
        (or back to their sender with an error when not storable), IQ
        requests are answered ``<service-unavailable/>``, the rest (presence,
        results, XEP-0280 copies) is dropped. A message a carbon-enabled
        resource of the user got a copy of is not stored again (XEP-0280:
        once per resource), as Prosody does; ``leaving`` (the session whose
        stanzas these are, still bound) is not such a resource."""
        router, sessions = self.host.router, self.host.sessions
        await sessions.load((user,), fresh=True)
        copied = self.host.module("carbons") is not None and any(
            Carbons.enabled.get(s) for s in sessions.available(user) if s is not leaving)
        for data in queue:
            try:
                el = parse_stanza(data)
            except ValueError:
                continue
            kind, stype = local_name(el), el.get("type")
            if kind == "message" and not _carbon_of(el, user):
                if stype in (None, "normal", "chat") and not (
                        copied and eligible(el, True)):
                    await router.offline(el, user)
            elif kind == "iq" and stype in ("get", "set"):
                router.bounce(el, StanzaError("service-unavailable"))

    # -- resumption ------------------------------------------------------------
    @hook(f"nonza/{NS}:resume")
    async def resume(self, carrier: Any, el: Any) -> bool:
        if isinstance(carrier, ClientSession):
            carrier.transport.write(sm.failed("unexpected-request"))   # bound already
            return True
        stream: C2S = carrier
        if stream.server.config.client.resume_timeout <= 0:
            stream.write(sm.failed("feature-not-implemented"))     # XEP-0198 §5
            return True
        token = el.get("previd") or ""
        try:
            h = sm.parse_h(el.get("h"))
        except ValueError:
            stream.write(sm.failed("bad-request"))
            return True
        resource = sm.token_resource(token)
        assert stream.user is not None
        try:
            full = stream.user.with_resource(resource) if resource else None
        except JIDError:
            full = None
        if full is None:
            stream.write(sm.failed("item-not-found"))
            return True
        sessions = stream.server.sessions
        async with sessions.binding(full.bare):
            await sessions.load((full.bare,), fresh=True)
            session = sessions.get(full)
            if isinstance(session, ClientSession):
                st = self.state.get(session)
                if st is not None and st.token == token and session.bound and not st.closing:
                    if self.resume_here(stream, session, st, h):
                        await self.host.bus.notify("session-resumed", session)
                    return True
                if st is not None and st.token == token and st.closing:
                    # Ending (what it held going to offline storage): the
                    # answer once it is gone, so a new bind finds it all there.
                    await session.unbind()
            elif session is not None and session.fields.get(self.token.key) == token:
                answer = await self.take(stream, session, token, h)
                if answer is not None:
                    stream.write(answer)
                return True
        stream.write(sm.failed("item-not-found"))
        return True

    def resume_here(self, stream: C2S, session: ClientSession, st: SMState,
                    h: int) -> bool:
        try:
            st.acked(h)
        except sm.TooHigh as exc:
            stream.write(sm.failed("undefined-condition", st.h_in, exc.condition()))
            return False
        self.waiting.discard(session)
        st.stop_timer()
        st.mirror(False)
        old = session.attach(stream)
        stream.carry(session)
        self.resent(stream, st)
        if not isinstance(old, Held):
            old.close(StreamError("conflict", "resumed on another connection"))
        return True

    def resent(self, stream: C2S, st: SMState) -> None:
        """``<resumed/>``, then what the client did not acknowledge (XEP-0198 §5)."""
        assert st.token is not None
        stream.write(sm.resumed(st.token, st.h_in))
        for data in st.out.queue:
            stream.write(data)
        st.stop_timer()
        st.ask_later()
        self.log.info("%s resumed (%d stanzas sent again)", st.session.jid, len(st.out.queue))

    async def take(self, stream: C2S, proxy: Any, token: str, h: int) -> bytes | None:
        """Ask the node holding the session to hand it over; None once it is
        resumed here, else the ``<failed/>`` to send."""
        sessions = stream.server.sessions
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.pending[token] = (stream, fut)
        request = {"token": token, "full": str(proxy.jid), "sid": proxy.sid, "h": h,
                   "node": sessions.node, "newsid": stream.id}
        sessions.tell(proxy.node, proxy.jid.domain, "sm-take", json.dumps(request).encode())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), TAKE_TIMEOUT)
        except asyncio.TimeoutError:
            self.log.warning("%s: %s did not hand the session over in time", proxy.jid,
                             proxy.node)
            return sm.failed("item-not-found")
        finally:
            if token in self.pending and self.pending[token][1] is fut:
                del self.pending[token]

    @hook("cluster/sm-take")
    async def give(self, payload: bytes) -> bool:
        """Another node's client resumes a session of ours: hand it over."""
        req = json.loads(payload)
        full, token, node = JID.parse(req["full"]), req["token"], req["node"]
        sessions = self.host.sessions
        found = sessions.local(full)
        session = found if isinstance(found, ClientSession) else None
        st = self.state.get(session) if session is not None else None
        if (session is not None and st is not None and st.token == token and st.closing
                and session.id == req["sid"]):
            # Ending: refused once it is gone, what it held stored (as
            # resume() does here), so a bind after <failed/> finds it all.
            self.server.later(self.refuse_when_gone(session, node, token))
            return True
        if (session is None or st is None or st.token != token or st.closing
                or session.id != req["sid"]):
            sessions.tell(node, full.domain, "sm-moved",
                          sm.pack({"token": token, "failed": "item-not-found"}, ()))
            return True
        try:
            st.out.ack(int(req["h"]))
        except sm.TooHigh as exc:
            sessions.tell(node, full.domain, "sm-moved", sm.pack(
                {"token": token, "failed": "undefined-condition", "h": st.h_in,
                 "app": exc.condition()}, ()))
            return True
        st.stop_timer()
        st.mirror(False)
        self.waiting.discard(session)
        await self.host.bus.notify("session-moving", session)
        old = session.attach(Held(0))
        session.tap(None)
        presence = session.presence
        state = {"token": token, "full": str(full), "sid": req["newsid"], "oldsid": session.id,
                 "h": st.h_in,
                 "acked": st.out.acked, "max": st.max, "available": session.available,
                 "priority": session.priority,
                 "presence": serialize(presence).decode() if presence is not None else None,
                 "fields": shared_values(session)}
        queue = st.out.take()
        sessions.hand_over(session, node, req["newsid"])
        session.bound = False
        sessions.tell(node, full.domain, "sm-moved", sm.pack(state, queue))
        self.log.info("%s handed over to %s (%d stanzas unacknowledged)", full, node, len(queue))
        if not isinstance(old, Held):
            old.close(StreamError("conflict", "resumed on another node"))
        return True

    async def refuse_when_gone(self, session: ClientSession, node: str, token: str) -> None:
        await session.unbind()
        self.host.sessions.tell(node, session.jid.domain, "sm-moved",
                                sm.pack({"token": token, "failed": "item-not-found"}, ()))

    @hook("cluster/sm-moved")
    def moved(self, payload: bytes) -> bool:
        """The session another node handed over (or why it could not): bound
        here before anything after it in this node's inbox is delivered."""
        state, queue = sm.unpack(payload)
        token = state["token"]
        stream, fut = self.pending.pop(token, (None, None))
        if "failed" in state:
            if fut is not None and not fut.done():
                fut.set_result(sm.failed(state["failed"], state.get("h"), state.get("app", "")))
            return True
        if stream is None or stream.closing:
            # Its client was told it failed (too late), or went: it ends
            # here as it would have there.
            self.server.later(self.orphan(state, queue))
        else:
            session = self.restore(state, queue, stream)
            self.server.sessions.adopt(session)
            session.bound = True
            stream.carry(session)
            self.resent(stream, self.state.get(session))
        if fut is not None and not fut.done():
            fut.set_result(None)
        return True

    def restore(self, state: dict[str, Any], queue: list[bytes],
                transport: Any) -> ClientSession:
        """The session another node handed over, on ``transport``, not bound."""
        full = JID.parse(state["full"])
        srv = self.server
        session = ClientSession(srv, self.host, full, state["sid"], transport)
        session.available = bool(state["available"])
        session.priority = int(state["priority"])
        if state.get("presence"):
            session.presence = parse_stanza(state["presence"].encode())
        restore_shared(session, state.get("fields") or {})
        st = SMState(session, srv.config.client, state["token"], int(state["max"]),
                     sm.Unacked(int(state["acked"]), queue), int(state["h"]))
        self.state.set(session, st)
        self.token.set(session, state["token"])
        session.tap(st.write)
        return session

    async def orphan(self, state: dict[str, Any], queue: list[bytes]) -> None:
        """A handover nobody waits for: the session ends (its contacts see it
        go, its messages go to offline storage), unless its resource is
        bound again by now (its client bound after <failed/>): then only
        the messages are given up, the new session's presence stands."""
        full = JID.parse(state["full"])
        sessions = self.host.sessions
        await sessions.load((full.bare,), fresh=True)
        current = sessions.get(full)
        if current is not None and getattr(current, "sid", None) != state["oldsid"]:
            await self.give_up(full.bare, queue)
            return
        await self.host.bus.notify("resource-unbound", self.restore(state, queue, Held(0)))


def _carbon_of(el: Any, user: JID) -> bool:
    """A XEP-0280 copy for ``user`` (its original went to another resource)."""
    return el.get("from") == str(user) and any(
        child.tag in (_SENT, _RECEIVED) for child in el)


_SENT, _RECEIVED = "{urn:xmpp:carbons:2}sent", "{urn:xmpp:carbons:2}received"
