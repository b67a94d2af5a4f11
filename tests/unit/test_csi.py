"""XEP-0352 Client State Indication apart from sockets: what may wait, the
queue of held presences, and a real ClientSession (over a recording
transport) going inactive and active again with the csi module loaded."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from vinespy.jid import JID
from vinespy.modules.csi import NS, Pending, holds, urgent
from vinespy.stream.session import ClientSession, nonza
from vinespy.xml import Element, element

from tests.harness import DOMAIN, World, parse

ALICE = JID.parse(f"alice@{DOMAIN}/phone")


def presence(frm: str, type: str | None = None, status: str = "") -> Element:
    kind = f" type='{type}'" if type else ""
    return parse(f"<presence from='{frm}' to='{ALICE}'{kind}><status>{status}</status>"
                 "</presence>")


# --- what may wait ------------------------------------------------------------------


def test_only_available_and_unavailable_presence_of_others_is_held() -> None:
    assert holds(presence(f"bob@{DOMAIN}/r"), ALICE)
    assert holds(presence(f"bob@{DOMAIN}/r", "unavailable"), ALICE)
    assert holds(presence(f"alice@{DOMAIN}/laptop"), ALICE)       # another resource of hers
    assert not holds(presence(str(ALICE)), ALICE)                 # her own, reflected
    for t in ("subscribe", "subscribed", "unsubscribe", "unsubscribed", "error"):
        assert not holds(presence(f"bob@{DOMAIN}", t), ALICE), t


def test_what_goes_out_at_once_after_the_held_presence() -> None:
    """Prosody mod_csi_simple's "important": a message with a body (its own
    or a carbon's), not a headline; a presence that needs action."""
    assert urgent(parse("<message type='chat'><body>hi</body></message>"))
    assert urgent(parse("<message type='groupchat'><body>hi</body></message>"))
    assert urgent(parse(
        "<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' type='chat'><body>hi</body></message>"
        "</forwarded></received></message>"))
    assert not urgent(parse("<message type='headline'><body>news</body></message>"))
    assert not urgent(parse("<message type='chat'><composing "
                            "xmlns='http://jabber.org/protocol/chatstates'/></message>"))
    assert urgent(presence(f"bob@{DOMAIN}", "subscribe"))
    assert not urgent(presence(f"bob@{DOMAIN}/r"))


# --- the queue ----------------------------------------------------------------------


def statuses(held: list[Element]) -> list[tuple[str | None, str | None]]:
    return [(st.get("from"), st.findtext("{jabber:client}status")) for st in held]


def test_the_latest_per_sender_is_held_in_the_order_of_last_update() -> None:
    """Superseded presences drop out; what remains keeps the order it came in."""
    q = Pending(10)
    b, c = f"bob@{DOMAIN}/r", f"carol@{DOMAIN}/r"
    for st in (presence(b, status="b1"), presence(c, status="c1"),
               presence(b, status="b2"), presence(c, "unavailable", "c gone")):
        assert q.hold(st)
    assert statuses(q.drain()) == [(b, "b2"), (c, "c gone")]
    assert q.drain() == []


def test_a_full_queue_takes_no_new_sender_but_replaces_a_known_one() -> None:
    q = Pending(2)
    assert q.hold(presence("a@x/r")) and q.hold(presence("b@x/r"))
    assert not q.hold(presence("c@x/r"))
    assert q.hold(presence("a@x/r", status="again"))
    assert statuses(q.drain()) == [("b@x/r", ""), ("a@x/r", "again")]


# --- a session ----------------------------------------------------------------------


class Wire:
    """A transport recording each stanza written: what a client would read,
    and what XEP-0198 would count."""

    peer = None
    secure = True

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self, error: Any = None) -> None:
        pass


def world_and_session(max_held: int = 10_000) -> tuple[World, ClientSession, Wire, list[str]]:
    """The csi module, a deliver-presence handler below it recording what it
    sees, and alice's bound session."""
    world = World("csi", options={"csi": {"max_held": max_held}})
    seen: list[str] = []
    world.host.bus.on("deliver-presence", lambda s, st: seen.append(st.get("from")))
    wire = Wire()
    server: Any = SimpleNamespace(sessions=world.router.sessions, router=world.router)
    s = ClientSession(server, world.host, ALICE, "sid1", wire)
    world.router.sessions.bind(s)
    s.bound = True
    return world, s, wire, seen


async def say(world: World, carrier: Any, state: str) -> None:
    assert await nonza(world.host, carrier, element(NS, state))


async def test_presence_waits_until_active_and_each_is_written_once() -> None:
    world, s, wire, seen = world_and_session()
    await say(world, s, "inactive")
    for i in range(3):
        s.send(presence(f"bob@{DOMAIN}/r", status=f"b{i}"))
        s.send(presence(f"carol@{DOMAIN}/r", status=f"c{i}"))
    s.send(parse("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>"))
    s.send(parse("<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/>"
                 "</message>"))
    assert len(wire.out) == 2 and seen == []          # the iq and the chat state only
    await say(world, s, "active")
    assert [b"<status>b2</status>" in d for d in wire.out[2:]] == [True, False]
    assert b"<status>c2</status>" in wire.out[3]
    assert seen == [f"bob@{DOMAIN}/r", f"carol@{DOMAIN}/r"]     # once each, when written
    s.send(presence(f"bob@{DOMAIN}/r", status="live"))
    assert b"live" in wire.out[-1] and len(wire.out) == 5


async def test_a_message_with_a_body_goes_out_after_what_is_held() -> None:
    world, s, wire, _ = world_and_session()
    await say(world, s, "inactive")
    s.send(presence(f"bob@{DOMAIN}/r", status="before"))
    s.send(parse(f"<message from='bob@{DOMAIN}/r' type='chat'><body>hi</body></message>"))
    assert b"before" in wire.out[0] and b"<body>hi</body>" in wire.out[1]
    s.send(presence(f"bob@{DOMAIN}/r", status="after"))      # still inactive: held
    assert len(wire.out) == 2
    s.send(presence(f"bob@{DOMAIN}", "subscribe"))           # needs action: at once
    assert b"after" in wire.out[2] and b'type="subscribe"' in wire.out[3]


async def test_past_max_held_the_held_presences_are_written() -> None:
    world, s, wire, _ = world_and_session(max_held=2)
    await say(world, s, "inactive")
    for who in ("a", "b", "c"):
        s.send(presence(f"{who}@{DOMAIN}/r"))
    assert [d.split(b'from="')[1][:1] for d in wire.out] == [b"a", b"b", b"c"]
    s.send(presence(f"d@{DOMAIN}/r"))                        # holding again
    assert len(wire.out) == 3


async def test_a_held_presence_is_a_copy_and_is_dropped_with_the_session() -> None:
    world, s, wire, _ = world_and_session()
    await say(world, s, "inactive")
    st = presence(f"bob@{DOMAIN}/r", status="kept")
    s.send(st)
    st.set("from", f"mallory@{DOMAIN}/r")          # the sender may reuse its element
    await say(world, s, "active")
    assert b"bob@" in wire.out[0]
    await say(world, s, "inactive")
    s.send(presence(f"bob@{DOMAIN}/r"))
    await world.host.bus.notify("resource-unbound", s)
    await say(world, s, "active")
    assert len(wire.out) == 1


async def test_before_bind_the_state_is_taken_and_ignored() -> None:
    """The carrier is then the stream: no session to hold anything for."""
    world = World("csi")
    stream = SimpleNamespace()
    await say(world, stream, "inactive")
    await say(world, stream, "active")
