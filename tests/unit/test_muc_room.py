"""vinespy.muc.room and vinespy.muc.admin against XEP-0045: the stanzas each
use case puts out, in order, with from/to/type/status codes/items, as the
XEP's examples show them (§7 occupant, §8 moderator, §9 admin, §10 owner)."""

from __future__ import annotations

import pytest

from vinespy import ns
from vinespy.errors import StanzaError
from vinespy.jid import JID
from vinespy.muc.admin import admin_iq, owner_iq
from vinespy.muc.room import MUC_USER, OCCUPANT_ID, Room, RoomConfig
from vinespy.xml import Element, parse_stanza, serialize

ROOM = JID.parse("coven@chat.shakespeare.lit")
CRONE = JID.parse("crone1@shakespeare.lit/desktop")
WITCH = JID.parse("wiccarocks@shakespeare.lit/laptop")
HAG = JID.parse("hag66@shakespeare.lit/pda")
ROMEO = JID.parse("romeo@montague.lit/orchard")
SECRET = b"k" * 32
T0 = 1_700_000_000.0


def xml(text: str) -> Element:
    return parse_stanza(text.encode())


def join(room: Room, who: JID, nick: str, extra: str = "", now: float = T0) -> list[Element]:
    return room.presence(who, xml(f"<presence from='{who}' to='{ROOM}/{nick}'>"
                                  f"<x xmlns='http://jabber.org/protocol/muc'>{extra}</x>"
                                  "</presence>"), now)


def leave(room: Room, who: JID, nick: str, status: str = "") -> list[Element]:
    body = f"<status>{status}</status>" if status else ""
    return room.presence(who, xml(f"<presence to='{ROOM}/{nick}' type='unavailable'>"
                                  f"{body}</presence>"), T0)


def say(room: Room, who: JID, body: str, now: float = T0, to: str = str(ROOM),
        type: str = "groupchat") -> list[Element]:
    return room.message(who, xml(f"<message to='{to}' type='{type}' id='m1'>"
                                 f"<body>{body}</body></message>"), now)


def iq(room: Room, who: JID, payload: str, nsuri: str = "muc#admin",
       type: str = "set") -> list[Element]:
    el = xml(f"<iq from='{who}' to='{ROOM}' type='{type}' id='q1'><query "
             f"xmlns='http://jabber.org/protocol/{nsuri}'>{payload}</query></iq>")
    return (admin_iq if nsuri == "muc#admin" else owner_iq)(room, who, el, T0)


def codes(el: Element) -> list[str]:
    return [s.get("code", "") for s in el.iterfind(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status")]


def item(el: Element) -> dict[str, str]:
    it = el.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    return dict(it.attrib) if it is not None else {}


def brief(el: Element) -> tuple[str, str, str, str | None, list[str]]:
    """(kind, from, to, type, status codes)."""
    return (el.tag.rpartition("}")[2], el.get("from", ""), el.get("to", ""), el.get("type"),
            codes(el))


def body(el: Element) -> str | None:
    b = el.find(f"{{{ns.CLIENT}}}body")
    return None if b is None else b.text


def error_of(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(StanzaError) as exc:
        fn(*args)
    return exc.value.condition


def open_room(config: RoomConfig | None = None) -> Room:
    """A room created by crone1 (nick firstwitch) and unlocked as an instant room."""
    room = Room(ROOM, SECRET, config, creator=CRONE)
    join(room, CRONE, "firstwitch")
    iq(room, CRONE, "<x xmlns='jabber:x:data' type='submit'/>", "muc#owner")
    return room


# -- §10.1 creation ---------------------------------------------------------------

def test_creation_201_then_locked_until_instant_submit() -> None:
    room = Room(ROOM, SECRET, creator=CRONE)
    out = join(room, CRONE, "firstwitch")
    assert [brief(e) for e in out] == [
        ("presence", f"{ROOM}/firstwitch", str(CRONE), None, ["110", "201"]),
        ("message", f"{ROOM}", str(CRONE), "groupchat", []),
    ]
    assert item(out[0]) == {"affiliation": "owner", "role": "moderator", "jid": str(CRONE)}
    assert room.locked
    assert error_of(join, room, WITCH, "secondwitch") == "item-not-found"      # §7.2.11
    res = iq(room, CRONE, "<x xmlns='jabber:x:data' type='submit'/>", "muc#owner")
    assert [brief(e) for e in res] == [("iq", str(ROOM), str(CRONE), "result", [])]
    assert res[0].get("id") == "q1"
    assert not room.locked
    assert join(room, WITCH, "secondwitch")
    assert codes(join(room, HAG, "thirdwitch")[-2]) == ["110"]      # 201 only for the creator


def test_cancelling_initial_configuration_destroys() -> None:
    room = Room(ROOM, SECRET, creator=CRONE)
    join(room, CRONE, "firstwitch")
    out = iq(room, CRONE, "<x xmlns='jabber:x:data' type='cancel'/>", "muc#owner")
    assert [brief(e) for e in out] == [
        ("iq", str(ROOM), str(CRONE), "result", []),
        ("presence", f"{ROOM}/firstwitch", str(CRONE), "unavailable", ["110"]),
    ]
    assert room.destroyed
    room = open_room()
    iq(room, CRONE, "<x xmlns='jabber:x:data' type='cancel'/>", "muc#owner")
    assert not room.destroyed


def test_only_owner_configures() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    assert error_of(iq, room, WITCH, "<x xmlns='jabber:x:data' type='submit'/>",
                    "muc#owner") == "forbidden"


def test_config_form_get_and_submit() -> None:
    room = open_room()
    form = iq(room, CRONE, "", "muc#owner", "get")[0]
    fields = {f.get("var"): f.findtext(f"{{{ns.DATA}}}value")
              for f in form.iter(f"{{{ns.DATA}}}field")}
    assert fields["FORM_TYPE"] == "http://jabber.org/protocol/muc#roomconfig"
    assert fields["muc#roomconfig_membersonly"] == "0"
    iq(room, CRONE, "<x xmlns='jabber:x:data' type='submit'>"
       "<field var='muc#roomconfig_roomname'><value>The Coven</value></field>"
       "<field var='muc#roomconfig_whois'><value>anyone</value></field>"
       "<field var='muc#roomconfig_maxusers'><value>30</value></field></x>", "muc#owner")
    assert (room.config.name, room.config.whois, room.config.max_users) == (
        "The Coven", "anyone", 30)


# -- §7.2 entering -----------------------------------------------------------------

def test_join_order_others_then_self_110_then_history_then_subject() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    say(room, CRONE, "one", T0 + 1)
    say(room, WITCH, "two", T0 + 2)
    room.message(CRONE, xml(f"<message to='{ROOM}' type='groupchat'>"
                            "<subject>Fire Burn</subject></message>"), T0 + 3)
    out = join(room, HAG, "thirdwitch", now=T0 + 4)
    assert [brief(e) for e in out] == [
        ("presence", f"{ROOM}/firstwitch", str(HAG), None, []),          # others' first
        ("presence", f"{ROOM}/secondwitch", str(HAG), None, []),
        ("presence", f"{ROOM}/thirdwitch", str(CRONE), None, []),        # broadcast
        ("presence", f"{ROOM}/thirdwitch", str(WITCH), None, []),
        ("presence", f"{ROOM}/thirdwitch", str(HAG), None, ["110"]),     # self last
        ("message", f"{ROOM}/firstwitch", str(HAG), "groupchat", []),    # history
        ("message", f"{ROOM}/secondwitch", str(HAG), "groupchat", []),
        ("message", f"{ROOM}/firstwitch", str(HAG), "groupchat", []),    # subject
    ]
    assert [body(e) for e in out[5:7]] == ["one", "two"]
    delay = out[5].find(f"{{{ns.DELAY}}}delay")
    assert delay is not None and delay.attrib == {"from": str(ROOM),
                                                  "stamp": "2023-11-14T22:13:21Z"}
    assert out[7].findtext(f"{{{ns.CLIENT}}}subject") == "Fire Burn"
    # semi-anonymous (§7.2.3): the moderator sees thirdwitch's JID, secondwitch does not
    assert item(out[2]) == {"affiliation": "none", "role": "participant", "jid": str(HAG)}
    assert item(out[3]) == {"affiliation": "none", "role": "participant"}
    assert item(out[0]) == {"affiliation": "owner", "role": "moderator"}


def test_join_empty_subject_and_presence_payload_kept() -> None:
    room = open_room()
    out = room.presence(WITCH, xml(f"<presence to='{ROOM}/secondwitch'><show>away</show>"
                                   f"<occupant-id xmlns='{OCCUPANT_ID}' id='spoof'/>"
                                   "</presence>"), T0)
    own = out[-2]
    assert own.findtext(f"{{{ns.CLIENT}}}show") == "away"
    ids = [o.get("id") for o in own.iter(f"{{{OCCUPANT_ID}}}occupant-id")]
    assert ids == [room.occupant_id(WITCH.bare)] and "spoof" not in ids
    subject = out[-1].find(f"{{{ns.CLIENT}}}subject")
    assert subject is not None and not subject.text        # §7.2.16: empty subject
    assert out[-1].get("from") == str(ROOM)


def test_non_anonymous_room_status_100_and_jids_for_all() -> None:
    room = open_room(RoomConfig(whois="anyone"))
    out = join(room, WITCH, "secondwitch")
    assert codes(out[-2]) == ["110", "100"]
    assert item(out[0])["jid"] == str(CRONE)


def test_nick_prepared_with_precis_and_210() -> None:
    room = open_room()
    out = join(room, WITCH, "  Second  Witch ")
    assert out[-2].get("from") == f"{ROOM}/Second Witch"
    assert codes(out[-2]) == ["110", "210"]
    assert error_of(join, room, HAG, "   ") == "jid-malformed"
    assert error_of(join, room, HAG, "second witch") == "conflict"      # case-mapped equal
    assert error_of(room.presence, HAG, xml(f"<presence to='{ROOM}'/>"), T0) == "jid-malformed"


def test_entry_refusals() -> None:
    room = open_room(RoomConfig(password="cauldronburn", max_users=2))
    assert error_of(join, room, WITCH, "secondwitch") == "not-authorized"
    assert error_of(join, room, WITCH, "secondwitch",
                    "<password>wrong</password>") == "not-authorized"
    assert join(room, WITCH, "secondwitch", "<password>cauldronburn</password>")
    assert error_of(join, room, HAG, "firstwitch",
                    "<password>cauldronburn</password>") == "conflict"
    assert error_of(join, room, HAG, "thirdwitch",
                    "<password>cauldronburn</password>") == "service-unavailable"
    assert len(room.occupants) == 2                 # nothing mutated by refusals


def test_members_only_and_banned() -> None:
    room = open_room(RoomConfig(members_only=True))
    assert error_of(join, room, HAG, "thirdwitch") == "registration-required"
    iq(room, CRONE, f"<item affiliation='member' jid='{HAG.bare}'/>")
    assert join(room, HAG, "thirdwitch")
    iq(room, CRONE, f"<item affiliation='outcast' jid='{ROMEO.bare}'/>")
    assert error_of(join, room, ROMEO, "romeo") == "forbidden"


def test_history_management() -> None:
    room = open_room()
    for i in range(10):
        say(room, CRONE, f"m{i}", T0 + i)

    def got(extra: str, now: float = T0 + 10) -> list[str | None]:
        out = join(room, WITCH, "secondwitch", extra, now)
        leave(room, WITCH, "secondwitch")
        return [body(e) for e in out if e.get("type") == "groupchat" and body(e)]
    assert got("") == [f"m{i}" for i in range(10)]
    assert got("<history maxstanzas='3'/>") == ["m7", "m8", "m9"]
    assert got("<history maxstanzas='0'/>") == []
    assert got("<history maxchars='0'/>") == []
    assert got("<history seconds='3'/>") == ["m7", "m8", "m9"]
    assert got("<history since='2023-11-14T22:13:28Z'/>") == ["m8", "m9"]
    assert got("<history seconds='5' maxstanzas='2'/>") == ["m8", "m9"]
    one = len(serialize(room.history[-1].message))
    assert got(f"<history maxchars='{one}'/>") == ["m9"]
    assert error_of(join, room, WITCH, "secondwitch",
                    "<history since='yesterday'/>") == "bad-request"
    assert error_of(join, room, WITCH, "secondwitch",
                    "<history maxstanzas='-1'/>") == "bad-request"
    assert "secondwitch" not in room.occupants          # a refusal changes nothing
    assert got("<history maxstanzas='50'/>") == [f"m{i}" for i in range(10)]


def test_history_bounded_by_config() -> None:
    room = open_room(RoomConfig(history_length=3))
    for i in range(5):
        say(room, CRONE, f"m{i}")
    assert [body(h.message) for h in room.history] == ["m2", "m3", "m4"]
    iq(room, CRONE, "<x xmlns='jabber:x:data' type='submit'><field var='muc#maxhistoryfetch'>"
       "<value>2</value></field></x>", "muc#owner")
    assert [body(h.message) for h in room.history] == ["m3", "m4"]


# -- §7.3 exit, §7.6 nick change, §7.7 presence change --------------------------------

def test_exit_broadcast_and_110() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    out = leave(room, WITCH, "secondwitch", "gone where the goblins go")
    assert [brief(e) for e in out] == [
        ("presence", f"{ROOM}/secondwitch", str(CRONE), "unavailable", []),
        ("presence", f"{ROOM}/secondwitch", str(WITCH), "unavailable", ["110"]),
    ]
    assert item(out[0]) == {"affiliation": "none", "role": "none", "jid": str(WITCH)}  # moderator
    assert item(out[1]) == {"affiliation": "none", "role": "none", "jid": str(WITCH)}
    assert out[0].findtext(f"{{{ns.CLIENT}}}status") == "gone where the goblins go"
    assert leave(room, WITCH, "secondwitch") == []          # not an occupant: dropped
    leave(room, CRONE, "firstwitch")
    assert room.empty


def test_nick_change_303() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    join(room, HAG, "thirdwitch")
    assert error_of(room.presence, HAG, xml(f"<presence to='{ROOM}/firstwitch'/>"),
                    T0) == "conflict"
    out = room.presence(HAG, xml(f"<presence to='{ROOM}/oldhag'/>"), T0)
    assert [brief(e) for e in out] == [
        ("presence", f"{ROOM}/thirdwitch", str(CRONE), "unavailable", ["303"]),
        ("presence", f"{ROOM}/thirdwitch", str(WITCH), "unavailable", ["303"]),
        ("presence", f"{ROOM}/thirdwitch", str(HAG), "unavailable", ["303", "110"]),
        ("presence", f"{ROOM}/oldhag", str(CRONE), None, []),
        ("presence", f"{ROOM}/oldhag", str(WITCH), None, []),
        ("presence", f"{ROOM}/oldhag", str(HAG), None, ["110"]),
    ]
    assert item(out[1]) == {"affiliation": "none", "role": "participant", "nick": "oldhag"}
    assert list(room.occupants) == ["firstwitch", "secondwitch", "oldhag"]


def test_presence_change_broadcast() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    out = room.presence(WITCH, xml(f"<presence to='{ROOM}/secondwitch'><show>xa</show>"
                                   "</presence>"), T0)
    assert [brief(e) for e in out] == [
        ("presence", f"{ROOM}/secondwitch", str(CRONE), None, []),
        ("presence", f"{ROOM}/secondwitch", str(WITCH), None, ["110"]),
    ]
    assert all(e.findtext(f"{{{ns.CLIENT}}}show") == "xa" for e in out)
    assert join(room, HAG, "thirdwitch")[1].findtext(f"{{{ns.CLIENT}}}show") == "xa"


def test_two_sessions_one_nick() -> None:
    room = open_room()
    other = CRONE.with_resource("phone")
    out = join(room, other, "firstwitch")
    assert [brief(e)[2] for e in out] == [str(other), str(other)]      # self + subject
    assert room.occupants["firstwitch"].jids == [CRONE, other]
    assert len(say(room, CRONE, "hi")) == 2
    assert [brief(e) for e in leave(room, other, "firstwitch")] == [
        ("presence", f"{ROOM}/firstwitch", str(other), "unavailable", ["110"])]
    assert "firstwitch" in room.occupants


# -- §7.4 messages, §7.5 private messages, §7.9 subject -------------------------------

def test_twenty_occupants_each_get_every_message_once_in_order() -> None:
    room = open_room()
    users = [JID.parse(f"u{i}@shakespeare.lit/r") for i in range(19)]
    for i, u in enumerate(users):
        join(room, u, f"user{i}")
    everyone = [CRONE, *users]
    got: dict[str, list[str | None]] = {str(j): [] for j in everyone}
    for n in range(5):
        for i, u in enumerate(everyone):
            for e in say(room, u, f"{n}-{i}"):
                assert e.get("from") == f"{ROOM}/{'firstwitch' if i == 0 else f'user{i - 1}'}"
                assert e.get("type") == "groupchat" and e.get("id") == "m1"
                got[e.get("to", "")].append(body(e))
    expected = [f"{n}-{i}" for n in range(5) for i in range(20)]
    assert len(got) == 20 and all(v == expected for v in got.values())


def test_message_occupant_id_and_refusals() -> None:
    room = open_room(RoomConfig(moderated=True))
    join(room, WITCH, "secondwitch")
    assert error_of(say, room, ROMEO, "hi") == "not-acceptable"
    assert error_of(say, room, WITCH, "hi") == "forbidden"         # visitor
    out = say(room, CRONE, "hi")
    oid = out[0].find(f"{{{OCCUPANT_ID}}}occupant-id")
    assert oid is not None and oid.get("id") == room.occupant_id(CRONE)
    other = Room(JID.parse("other@chat.shakespeare.lit"), b"s" * 32)
    assert other.occupant_id(CRONE) != room.occupant_id(CRONE)
    assert error_of(say, room, CRONE, "hi", T0, str(ROOM), "chat") == "bad-request"


def test_private_message() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    out = say(room, WITCH, "psst", T0, f"{ROOM}/firstwitch", "chat")
    assert [brief(e) for e in out] == [
        ("message", f"{ROOM}/secondwitch", str(CRONE), "chat", [])]
    assert out[0].find(f"{{{MUC_USER}}}x") is not None
    assert error_of(say, room, WITCH, "x", T0, f"{ROOM}/nobody", "chat") == "item-not-found"
    assert error_of(say, room, ROMEO, "x", T0, f"{ROOM}/firstwitch", "chat") \
        == "not-acceptable"
    assert error_of(say, room, WITCH, "x", T0, f"{ROOM}/firstwitch", "groupchat") \
        == "bad-request"


def test_subject_change_rights() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    subj = xml(f"<message to='{ROOM}' type='groupchat'><subject>Toil</subject></message>")
    assert error_of(room.message, WITCH, subj, T0) == "forbidden"
    out = room.message(CRONE, subj, T0)
    assert [e.get("to") for e in out] == [str(CRONE), str(WITCH)]
    assert (room.subject, room.subject_by, len(room.history)) == ("Toil", "firstwitch", 0)
    room.config.change_subject = True
    assert room.message(WITCH, subj, T0)


def test_mediated_invitation() -> None:
    room = open_room(RoomConfig(members_only=True, password="pw"))
    inv = xml(f"<message to='{ROOM}'><x xmlns='{MUC_USER}'><invite to='{HAG.bare}'>"
              "<reason>Hey Hecate</reason></invite></x></message>")
    out = room.message(CRONE, inv, T0)
    assert [brief(e) for e in out] == [("message", str(ROOM), str(HAG.bare), None, [])]
    invite = out[0].find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite")
    assert invite is not None and invite.get("from") == str(CRONE)
    assert invite.findtext(f"{{{MUC_USER}}}reason") == "Hey Hecate"
    assert out[0].findtext(f"{{{MUC_USER}}}x/{{{MUC_USER}}}password") == "pw"
    assert room.affiliation(HAG) == "member"
    assert error_of(room.message, ROMEO, inv, T0) == "not-acceptable"
    bad = xml(f"<message to='{ROOM}'><x xmlns='{MUC_USER}'><invite to='{ROMEO.bare}'/>"
              "<invite to='@bad'/></x></message>")
    assert error_of(room.message, CRONE, bad, T0) == "jid-malformed"
    assert room.affiliation(ROMEO) == "none"


# -- §8 moderator: kick, voice --------------------------------------------------------

def test_kick_307() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    join(room, HAG, "thirdwitch")
    assert error_of(iq, room, HAG, "<item nick='secondwitch' role='none'/>") == "forbidden"
    out = iq(room, CRONE, "<item nick='thirdwitch' role='none'><reason>Avaunt</reason></item>")
    assert [brief(e) for e in out] == [
        ("iq", str(ROOM), str(CRONE), "result", []),
        ("presence", f"{ROOM}/thirdwitch", str(CRONE), "unavailable", ["307"]),
        ("presence", f"{ROOM}/thirdwitch", str(WITCH), "unavailable", ["307"]),
        ("presence", f"{ROOM}/thirdwitch", str(HAG), "unavailable", ["307", "110"]),
    ]
    it = out[3].find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    assert it is not None and it.get("role") == "none"
    assert it.find(f"{{{MUC_USER}}}actor").get("nick") == "firstwitch"  # type: ignore
    assert it.findtext(f"{{{MUC_USER}}}reason") == "Avaunt"
    assert "thirdwitch" not in room.occupants
    assert error_of(iq, room, CRONE, "<item nick='thirdwitch' role='none'/>") \
        == "item-not-found"


def test_cannot_kick_admin_or_owner() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    iq(room, CRONE, f"<item affiliation='admin' jid='{WITCH.bare}'/>")
    assert room.occupants["secondwitch"].role == "moderator"
    assert error_of(iq, room, WITCH, "<item nick='firstwitch' role='none'/>") == "not-allowed"


def test_voice_grant_and_revoke() -> None:
    room = open_room(RoomConfig(moderated=True))
    join(room, WITCH, "secondwitch")
    assert room.occupants["secondwitch"].role == "visitor"
    out = iq(room, CRONE, "<item nick='secondwitch' role='participant'/>")
    assert [brief(e) for e in out] == [
        ("iq", str(ROOM), str(CRONE), "result", []),
        ("presence", f"{ROOM}/secondwitch", str(CRONE), None, []),
        ("presence", f"{ROOM}/secondwitch", str(WITCH), None, ["110"]),
    ]
    assert item(out[2])["role"] == "participant"
    assert say(room, WITCH, "now I speak")
    iq(room, CRONE, "<item nick='secondwitch' role='visitor'/>")
    assert error_of(say, room, WITCH, "hush") == "forbidden"
    voice = iq(room, CRONE, "<item role='participant'/>", type="get")[0]
    assert voice.find(".//{http://jabber.org/protocol/muc#admin}item") is None
    visitors = iq(room, CRONE, "<item role='visitor'/>", type="get")[0]
    assert [i.get("nick") for i in visitors.iter(
        "{http://jabber.org/protocol/muc#admin}item")] == ["secondwitch"]


# -- §9 admin: ban, members -----------------------------------------------------------

def test_ban_301() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    join(room, HAG, "thirdwitch")
    assert error_of(iq, room, WITCH, f"<item affiliation='outcast' jid='{HAG.bare}'/>") \
        == "forbidden"
    out = iq(room, CRONE, f"<item affiliation='outcast' jid='{HAG.bare}'>"
             "<reason>Treason</reason></item>")
    assert [brief(e) for e in out] == [
        ("iq", str(ROOM), str(CRONE), "result", []),
        ("presence", f"{ROOM}/thirdwitch", str(CRONE), "unavailable", ["301"]),
        ("presence", f"{ROOM}/thirdwitch", str(WITCH), "unavailable", ["301"]),
        ("presence", f"{ROOM}/thirdwitch", str(HAG), "unavailable", ["301", "110"]),
    ]
    assert item(out[2])["affiliation"] == "outcast"
    assert error_of(join, room, HAG, "thirdwitch") == "forbidden"
    banned = iq(room, CRONE, "<item affiliation='outcast'/>", type="get")[0]
    assert [i.get("jid") for i in banned.iter(
        "{http://jabber.org/protocol/muc#admin}item")] == [str(HAG.bare)]


def test_member_removal_in_members_only_321() -> None:
    room = open_room(RoomConfig(members_only=True))
    iq(room, CRONE, f"<item affiliation='member' jid='{WITCH.bare}'/>")
    join(room, WITCH, "secondwitch")
    out = iq(room, CRONE, f"<item affiliation='none' jid='{WITCH.bare}'/>")
    assert [brief(e)[4] for e in out[1:]] == [["321"], ["321", "110"]]
    assert room.affiliation(WITCH) == "none" and "secondwitch" not in room.occupants


def test_member_grant_broadcasts_affiliation() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    out = iq(room, CRONE, f"<item affiliation='member' jid='{WITCH.bare}'/>")
    assert item(out[2]) == {"affiliation": "member", "role": "participant",
                            "jid": str(WITCH)}
    assert codes(out[2]) == ["110"]


def test_owner_only_grants_admin_and_last_owner_stays() -> None:
    room = open_room()
    iq(room, CRONE, f"<item affiliation='admin' jid='{WITCH.bare}'/>")
    join(room, WITCH, "secondwitch")
    assert error_of(iq, room, WITCH, f"<item affiliation='admin' jid='{HAG.bare}'/>") \
        == "not-allowed"
    assert error_of(iq, room, CRONE, f"<item affiliation='none' jid='{CRONE.bare}'/>") \
        == "conflict"


def test_admin_set_is_all_or_nothing() -> None:
    room = open_room()
    assert error_of(iq, room, CRONE, f"<item affiliation='member' jid='{WITCH.bare}'/>"
                    "<item affiliation='bogus' jid='x@y'/>") == "bad-request"
    assert room.affiliation(WITCH) == "none"


# -- §10.9 destroy ----------------------------------------------------------------------

def test_destroy() -> None:
    room = open_room()
    join(room, WITCH, "secondwitch")
    out = iq(room, CRONE, "<destroy jid='heath@chat.shakespeare.lit'>"
             "<reason>Macbeth doth come.</reason></destroy>", "muc#owner")
    assert [brief(e) for e in out] == [
        ("iq", str(ROOM), str(CRONE), "result", []),
        ("presence", f"{ROOM}/firstwitch", str(CRONE), "unavailable", ["110"]),
        ("presence", f"{ROOM}/secondwitch", str(WITCH), "unavailable", ["110"]),
    ]
    d = out[2].find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy")
    assert d is not None and d.get("jid") == "heath@chat.shakespeare.lit"
    assert d.findtext(f"{{{MUC_USER}}}reason") == "Macbeth doth come."
    assert item(out[2]) == {"affiliation": "none", "role": "none"}
    assert room.destroyed and room.empty
