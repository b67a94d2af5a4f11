"""Priority-ordered event bus (Prosody util/events).

Handlers are called highest priority first; the first one that returns
something other than None stops the chain and its result is returned.
Handlers may be plain functions or coroutines.
"""

from __future__ import annotations

import bisect
import inspect
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Union

if TYPE_CHECKING:
    from .host import Host
    from .jid import JID
    from .sessions import Session
    from .xml import Element

Handler = Callable[..., Union[Any, Awaitable[Any]]]
log = logging.getLogger("vinespy.events")


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, int, Handler]]] = {}
        self._seq = 0
        self._frozen = False

    def on(self, event: str, handler: Handler, priority: int = 0) -> None:
        """Register ``handler`` for ``event``; later registrations of an equal
        priority run after earlier ones."""
        if self._frozen:
            raise RuntimeError("event bus is frozen: register handlers before serving")
        self._seq += 1
        bisect.insort(self._handlers.setdefault(event, []), (-priority, self._seq, handler))

    def off(self, event: str, handler: Handler) -> None:
        lst = self._handlers.get(event, [])
        lst[:] = [h for h in lst if h[2] is not handler]

    def freeze(self) -> None:
        self._frozen = True

    def has(self, event: str) -> bool:
        return bool(self._handlers.get(event))

    async def fire(self, event: str, *args: Any) -> Any:
        for _, _, handler in self._handlers.get(event, ()):
            result = handler(*args)
            if result is None:          # the common case: no await, no type check
                continue
            if inspect.isawaitable(result):
                result = await result
                if result is None:
                    continue
            return result
        return None

    async def notify(self, event: str, *args: Any) -> None:
        """Every handler of ``event``, whatever the others return or raise:
        for what happened (a resource gone) rather than what to decide. A
        handler that fails (a database down) is logged, and the rest run."""
        for _, _, handler in list(self._handlers.get(event, ())):
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a %s handler failed", event)

    def fire_sync(self, event: str, *args: Any) -> Any:
        """:meth:`fire` for events on paths that cannot wait (delivery to a
        client): every handler must be a plain function."""
        for _, _, handler in self._handlers.get(event, ()):
            result = handler(*args)
            if result is None:
                continue
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if close is not None:
                    close()             # never awaited: no "was never awaited" warning
                raise TypeError(f"a handler of {event!r} must not be a coroutine: "
                                f"{getattr(handler, '__qualname__', handler)}")
            return result
        return None


class StanzaEvent:
    """What a stanza handler receives: the stanza and where it came from/goes.

    ``origin`` is the local session that sent it (None when the server or
    another node did); ``to_type`` is ``self``, ``host``, ``bare``, ``full``,
    ``service`` or (``pre-<kind>`` only) ``remote`` (see docs/routing.md);
    ``host`` is the host whose bus fired the event.
    """

    __slots__ = ("stanza", "origin", "frm", "to", "to_type", "host")

    def __init__(self, stanza: Element, origin: Session | None, frm: JID, to: JID,
                 to_type: str, host: Host) -> None:
        self.stanza = stanza
        self.origin = origin
        self.frm = frm
        self.to = to
        self.to_type = to_type
        self.host = host
