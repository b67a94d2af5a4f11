"""A ClientSession apart from any socket: it writes through whatever
transport carries it, and can be moved to another (XEP-0198 resumption)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vinespy.errors import StreamError
from vinespy.jid import JID
from vinespy.stream.session import ClientSession, Held

from tests.harness import DOMAIN, World, parse, same


class Wire:
    """A transport that records what it is asked to do."""

    def __init__(self) -> None:
        self.peer = ("192.0.2.1", 5222)
        self.secure = True
        self.out: list[bytes] = []
        self.closed: list[StreamError | None] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self, error: StreamError | None = None) -> None:
        self.closed.append(error)


def session(world: World, wire: Wire, jid: str = f"alice@{DOMAIN}/phone",
            later: Any = None) -> ClientSession:
    server: Any = SimpleNamespace(sessions=world.router.sessions, router=world.router,
                                  later=later)
    s = ClientSession(server, world.host, JID.parse(jid), "sid1", wire)
    world.router.sessions.bind(s)
    s.bound = True
    return s


def test_send_writes_through_the_transport() -> None:
    world, wire = World(), Wire()
    s = session(world, wire)
    s.send(parse("<message to='alice@wonderland.lit/phone'><body>hi</body></message>"))
    s.send_serialized(parse("<presence/>"), b"<presence as-it-came=''/>")
    assert len(wire.out) == 2 and b"<body>hi</body>" in wire.out[0]
    assert wire.out[1] == b"<presence as-it-came=''/>"


def test_attach_moves_the_session_to_another_transport() -> None:
    world, first, second = World(), Wire(), Wire()
    s = session(world, first)
    s.send(parse("<message><body>1</body></message>"))
    assert s.attach(second) is first
    assert s.transport is second
    s.send(parse("<message><body>2</body></message>"))
    s.send_serialized(parse("<message/>"), b"<message>3</message>")
    s.close(StreamError("conflict"))
    assert len(first.out) == 1 and b"<body>1</body>" in first.out[0]
    assert first.closed == []
    assert b"<body>2</body>" in second.out[0] and second.out[1] == b"<message>3</message>"
    assert [e.condition for e in second.closed if e is not None] == ["conflict"]
    # It stays the same session: bound under its JID, with its state.
    assert world.router.sessions.get(JID.parse(f"alice@{DOMAIN}/phone")) is s


async def test_receive_stamps_from_and_routes() -> None:
    world, wire = World(), Wire()
    s = session(world, wire)
    bob = world.bind(f"bob@{DOMAIN}", "r")
    await s.receive(parse(f"<message from='mallory@{DOMAIN}' to='bob@{DOMAIN}/r' "
                          "type='chat'><body>x</body></message>"))
    (got,) = bob.got
    assert same(got, f"<message from='alice@{DOMAIN}/phone' to='bob@{DOMAIN}/r' "
                     "type='chat'><body>x</body></message>")


async def test_receive_answers_a_bad_iq_and_refuses_a_non_stanza() -> None:
    world, wire = World(), Wire()
    s = session(world, wire)
    await s.receive(parse("<iq type='get' id='1'/>"))
    assert b"bad-request" in wire.out[0] and b"type=\"error\"" in wire.out[0]
    with pytest.raises(StreamError) as exc:
        await s.receive(parse("<foo xmlns='urn:example:nothing'/>"))
    assert exc.value.condition == "unsupported-stanza-type"


async def test_unbind_leaves_the_table_once_and_tells_the_modules() -> None:
    world, wire = World(), Wire()
    s = session(world, wire)
    s.available = True
    told: list[Any] = []
    world.host.bus.on("resource-unbound", lambda session: told.append(session))
    await s.unbind()
    await s.unbind()
    assert told == [s] and not s.bound and not s.available
    assert world.router.sessions.get(s.jid) is None


def test_a_held_session_keeps_what_it_is_sent_for_its_next_transport() -> None:
    """Its connection gone, a kept session stays bound and keeps what it is
    sent; attached to a new transport, that goes out first, in order."""
    world, first, second = World(), Wire(), Wire()
    s = session(world, first)
    held = s.detach()
    assert isinstance(held, Held) and s.transport is held
    s.send(parse("<message><body>1</body></message>"))
    s.send_serialized(parse("<message/>"), b"<message>2</message>")
    assert first.out == [] and len(held.queue) == 2
    assert world.router.sessions.get(s.jid) is s
    assert s.attach(second) is held and held.queue == []
    s.send(parse("<message><body>3</body></message>"))
    assert [b"<body>1</body>" in second.out[0], second.out[1], b"<body>3</body>" in second.out[2]] \
        == [True, b"<message>2</message>", True]


def test_a_held_session_over_its_limit_keeps_nothing() -> None:
    """Past max_bytes a held session drops all it kept and says so: it must
    not be resumed (a client would miss stanzas without knowing)."""
    world, first, second = World(), Wire(), Wire()
    s = session(world, first)
    held = s.detach(max_bytes=100)
    s.send_serialized(parse("<message/>"), b"<message>" + b"x" * 60 + b"</message>")
    assert not held.overflowed and held.size < 100
    s.send_serialized(parse("<message/>"), b"<message>" + b"y" * 60 + b"</message>")
    assert held.overflowed and held.queue == []
    s.send_serialized(parse("<message/>"), b"<message/>")
    s.attach(second)
    assert second.out == []


async def test_closing_a_held_session_unbinds_it() -> None:
    """A held session has no stream whose end would unbind it: closing it
    (replaced by a new bind, closed by another node) ends it, as a task the
    server owns."""
    world, wire = World(), Wire()
    work: list[Any] = []
    s = session(world, wire, later=work.append)
    s.detach()
    s.close(StreamError("conflict"))
    assert wire.closed == []                       # the old transport is not touched
    (unbinding,) = work
    await unbinding
    assert not s.bound and world.router.sessions.get(s.jid) is None
