"""Narrows IQs to ``iq-<type>/<to_type>/<ns>:<child>`` (Prosody mod_iq), and
sends the server's own IQ requests.

A get/set carries exactly one child (checked by the stream); results and
errors addressed to the server or an account are claimed and dropped here
unless a module waits for them.

:meth:`IQ.request` is how a module asks something of an entity (a client:
XEP-0115 disco#info) and waits for the answer::

    answer = await host.module("iq").request(iq, timeout=30)

The request goes out from the host's domain (unless it names another
'from') with an id of its own (random, 128 bits); it is answered by a
result or error with that id **from the JID it was sent to**: an answer
from anyone else, guessing the id, completes nothing (RFC 6120 §8.2.3:
"the same 'from' as the 'to' of the request"). The answer must reach
this node: in a cluster, ask a client from the node holding its stream
(it answers there). At most ``max_pending`` requests wait per recipient
(more: :class:`RequestError` ``resource-constraint`` at once); a request
ends at its answer, its timeout (:class:`TimeoutError`), the recipient's
unbinding (``recipient-unavailable``) or the server's stop
(``service-unavailable``), and nothing of it is kept after.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from .. import ns
from ..errors import STANZA_CONDITIONS
from ..events import StanzaEvent
from ..jid import JID
from ..sessions import Session
from ..xml import Element, local_name, namespace
from . import Module, Option, hook


class RequestError(Exception):
    """A request of :meth:`IQ.request` failed: answered with an error
    (``reply`` is it, ``condition`` its RFC 6120 §8.3.3 condition), or
    ended by this server (``reply`` None)."""

    def __init__(self, condition: str, reply: Element | None = None, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.reply = reply


def condition_of(reply: Element) -> str:
    """The defined condition of an error reply (undefined-condition if none)."""
    error = reply.find(f"{{{ns.CLIENT}}}error")
    if error is not None:
        for el in error:
            if namespace(el) == ns.STANZAS and local_name(el) in STANZA_CONDITIONS:
                return local_name(el)
    return "undefined-condition"


class _Pending:
    __slots__ = ("to", "future")

    def __init__(self, to: JID, future: asyncio.Future[Element]) -> None:
        self.to = to
        self.future = future


class IQ(Module):
    name = "iq"
    options = {
        "max_pending": Option(int, default=8, min=1, max=1000),
    }

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_pending: int = self.option("max_pending")
        self._pending: dict[str, _Pending] = {}
        self._per_target: dict[JID, int] = {}

    @hook("iq/host")
    @hook("iq/self")
    @hook("iq/bare")
    @hook("iq/service")
    async def dispatch(self, ev: StanzaEvent) -> bool | None:
        st = ev.stanza
        stype = st.get("type")
        if stype in ("get", "set") and len(st):
            payload = st[0]
            event = f"iq-{stype}/{ev.to_type}/{namespace(payload)}:{local_name(payload)}"
            bus = self.host.bus
            if bus.has(event):
                return bool(await bus.fire(event, ev)) or None
        elif self._pending and stype in ("result", "error"):
            return self._answered(ev)
        return None

    def _answered(self, ev: StanzaEvent) -> bool | None:
        pending = self._pending.get(ev.stanza.get("id", ""))
        if pending is None or pending.to != ev.frm:
            return None         # not ours, or a spoofed answer: dropped as before
        if not pending.future.done():
            pending.future.set_result(ev.stanza)
        return True

    async def request(self, iq: Element, timeout: float = 30.0) -> Element:
        """Send ``iq`` (a get or set with a 'to') and return the result;
        raise :class:`RequestError` for an error reply (or when it cannot be
        sent or waited for) and :class:`TimeoutError` after ``timeout`` s.
        Its 'id' is replaced, its 'from' defaults to the host's domain."""
        if iq.get("type") not in ("get", "set") or iq.get("to") is None:
            raise ValueError("a request is an iq get or set with a 'to'")
        to = JID.parse(iq.get("to", ""))
        if self._per_target.get(to, 0) >= self.max_pending:
            raise RequestError("resource-constraint", None,
                               f"{self.max_pending} requests to {to} wait already")
        if iq.get("from") is None:
            iq.set("from", self.host.domain)
        rid = secrets.token_hex(16)
        while rid in self._pending:                 # never, but cheap to be sure
            rid = secrets.token_hex(16)
        iq.set("id", rid)
        future: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(to, future)
        self._per_target[to] = self._per_target.get(to, 0) + 1
        try:
            await self.host.router.route(iq, None)
            answer = await asyncio.wait_for(future, timeout)
        finally:
            del self._pending[rid]
            left = self._per_target[to] - 1
            if left:
                self._per_target[to] = left
            else:
                del self._per_target[to]
        if answer.get("type") == "error":
            raise RequestError(condition_of(answer), answer)
        return answer

    def _fail(self, to: JID | None, condition: str, text: str) -> None:
        for pending in self._pending.values():
            if (to is None or pending.to == to) and not pending.future.done():
                pending.future.set_exception(RequestError(condition, None, text))

    @hook("resource-unbound")
    def unbound(self, session: Session) -> None:
        """A resource asked is gone: no answer will come from it."""
        if self._per_target and session.jid in self._per_target:
            self._fail(session.jid, "recipient-unavailable", f"{session.jid} went away")

    async def stop(self) -> None:
        self._fail(None, "service-unavailable", "the server is stopping")
