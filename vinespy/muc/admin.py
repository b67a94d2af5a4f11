"""The muc#admin and muc#owner IQs of one room (XEP-0045 §8-§10), pure.

Same contract as :mod:`.room`: ``(room, sender full JID, iq, now)`` in, the
stanzas to deliver out (the IQ result first, then the presences the change
causes), a :class:`~vinespy.errors.StanzaError` raised before any mutation.
A set with several items is checked whole before any item applies, so it is
all or nothing (§9.5 "the service MUST process all items or none").
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from .. import ns
from ..errors import StanzaError
from ..jid import JID
from ..xml import Element, child, element, jid_attr, reply, stanza
from .room import MUC_ADMIN, MUC_OWNER, MUC_USER, RANK, ROLES, Occupant, Room

CONFIG_FORM = "http://jabber.org/protocol/muc#roomconfig"

# muc#roomconfig field -> (RoomConfig attribute, parser). §10.2, §16.5.3.
_BOOL = ("1", "true")
FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "muc#roomconfig_roomname": ("name", str),
    "muc#roomconfig_roomdesc": ("description", str),
    "muc#roomconfig_persistentroom": ("persistent", lambda v: v in _BOOL),
    "muc#roomconfig_publicroom": ("public", lambda v: v in _BOOL),
    "muc#roomconfig_membersonly": ("members_only", lambda v: v in _BOOL),
    "muc#roomconfig_moderatedroom": ("moderated", lambda v: v in _BOOL),
    "muc#roomconfig_roomsecret": ("password", str),
    "muc#roomconfig_maxusers": ("max_users", lambda v: int(v) if v.isdigit() else 0),
    "muc#roomconfig_whois": ("whois", lambda v: "anyone" if v == "anyone" else "moderators"),
    "muc#roomconfig_allowinvites": ("allow_invites", lambda v: v in _BOOL),
    "muc#roomconfig_changesubject": ("change_subject", lambda v: v in _BOOL),
    "muc#maxhistoryfetch": ("history_length", int),
}


def _query(el: Element, nsuri: str) -> Element:
    q = el.find(f"{{{nsuri}}}query")
    if q is None:
        raise StanzaError("bad-request", f"expected <query xmlns='{nsuri}'/>")
    return q


# -- muc#admin (§8, §9) ---------------------------------------------------------

def admin_iq(room: Room, frm: JID, el: Element, now: float) -> list[Element]:
    q = _query(el, MUC_ADMIN)
    items = q.findall(f"{{{MUC_ADMIN}}}item")
    if not items:
        raise StanzaError("bad-request", "no <item/> (XEP-0045 §8-§9)")
    if el.get("type") == "get":
        return [_list(room, frm, el, items[0])]
    if el.get("type") != "set":
        raise StanzaError("bad-request", "muc#admin takes get or set")
    actor = room.occupant_of(frm)
    changes = [_check(room, frm, actor, item) for item in items]     # all or nothing
    out = [reply(el)]
    for apply in changes:
        out += apply()
    return out


def _list(room: Room, frm: JID, el: Element, item: Element) -> Element:
    """§8.5 (voice list: moderators), §9.5/§9.8 (member, ban lists: admins),
    §10.5/§10.8 (owner, admin lists: admins too, as Prosody does)."""
    r = reply(el)
    q = child(r, MUC_ADMIN, "query")
    aff, role = item.get("affiliation"), item.get("role")
    actor = room.occupant_of(frm)
    if aff in RANK and aff != "none":
        if RANK[room.affiliation(frm)] < RANK["admin"]:
            raise StanzaError("forbidden", "only admins see affiliation lists (XEP-0045 §9.5)")
        for jid, a in room.affiliations.items():
            if a == aff:
                child(q, MUC_ADMIN, "item", affiliation=a, jid=str(jid))
    elif role in ROLES and role != "none":
        if actor is None or actor.role != "moderator":
            raise StanzaError("forbidden", "only moderators see role lists (XEP-0045 §8.5)")
        for o in room.occupants.values():
            if o.role == role:
                child(q, MUC_ADMIN, "item", affiliation=room.affiliation(o.bare), role=o.role,
                      nick=o.nick, jid=str(o.jids[0]))
    else:
        raise StanzaError("bad-request", "an affiliation or role to list (XEP-0045 §8.5)")
    return r


def _reason(item: Element) -> str | None:
    r = item.find(f"{{{MUC_ADMIN}}}reason")
    return None if r is None else (r.text or "")


def _check(room: Room, frm: JID, actor: Occupant | None,
           item: Element) -> Callable[[], list[Element]]:
    """Check one item against the privileges of §5.2 and return what applies it."""
    mine = room.affiliation(frm)
    reason = _reason(item)
    nick = actor.nick if actor is not None else None
    if item.get("role") is not None and item.get("nick") is not None:
        role = item.get("role", "")
        target = room.by_nick(item.get("nick", ""))
        if role not in ROLES:
            raise StanzaError("bad-request", f"unknown role {role!r}")
        if target is None:
            raise StanzaError("item-not-found", "no such occupant (XEP-0045 §8.2)")
        if actor is None or actor.role != "moderator":
            raise StanzaError("forbidden", "only moderators change roles (XEP-0045 §8)")
        theirs = room.affiliation(target.bare)
        if "moderator" in (role, target.role) and RANK[mine] < RANK["admin"]:
            raise StanzaError("forbidden", "only admins grant or revoke moderator"
                              " (XEP-0045 §9.6)")
        if RANK[theirs] >= RANK["admin"] and RANK[theirs] >= RANK[mine] and target is not actor:
            raise StanzaError("not-allowed", "an admin or owner's role is theirs"
                              " (XEP-0045 §8.2)")
        return lambda: _set_role(room, target, role, nick, reason)
    if item.get("affiliation") is not None and item.get("jid") is not None:
        aff = item.get("affiliation", "")
        jid = jid_attr(item).bare
        if aff not in RANK:
            raise StanzaError("bad-request", f"unknown affiliation {aff!r}")
        theirs = room.affiliation(jid)
        need = "owner" if "owner" in (aff, theirs) or "admin" in (aff, theirs) else "admin"
        if RANK[mine] < RANK[need]:
            raise StanzaError("forbidden" if RANK[mine] < RANK["admin"] else "not-allowed",
                              f"changing {theirs} to {aff} takes an {need} (XEP-0045 §9-§10)")
        owners = [j for j, a in room.affiliations.items() if a == "owner"]
        if theirs == "owner" and aff != "owner" and owners == [jid]:
            raise StanzaError("conflict", "the room's last owner stays (XEP-0045 §10.7)")
        return lambda: _set_affiliation(room, jid, aff, nick, reason)
    raise StanzaError("bad-request", "an item needs nick+role or jid+affiliation")


def _set_role(room: Room, target: Occupant, role: str, actor: str | None,
              reason: str | None) -> list[Element]:
    if role == "none":
        return room.removal(target, "307", actor, reason)           # kick, §8.2
    target.role = role
    return room.broadcast_presence(target)                            # voice, §8.3-8.4


def _set_affiliation(room: Room, jid: JID, aff: str, actor: str | None,
                     reason: str | None) -> list[Element]:
    if aff == "none":
        room.affiliations.pop(jid, None)
    else:
        room.affiliations[jid] = aff
    out: list[Element] = []
    for occ in [o for o in room.occupants.values() if o.bare == jid]:
        if aff == "outcast":
            out += room.removal(occ, "301", actor, reason)          # ban, §9.1
        elif room.config.members_only and RANK[aff] < RANK["member"]:
            out += room.removal(occ, "321", actor, reason)          # §9.4
        else:
            occ.role = room.entry_role(aff)                          # §9.3, §9.6
            out += room.broadcast_presence(occ)
    return out


# -- muc#owner (§10) -----------------------------------------------------------

def owner_iq(room: Room, frm: JID, el: Element, now: float) -> list[Element]:
    q = _query(el, MUC_OWNER)
    if room.affiliation(frm) != "owner":
        raise StanzaError("forbidden", "only owners configure the room (XEP-0045 §10)")
    if el.get("type") == "get":
        r = reply(el)
        r.append(config_form(room))
        return [r]
    destroy = q.find(f"{{{MUC_OWNER}}}destroy")
    if destroy is not None:
        return [reply(el)] + _destroy(room, destroy)
    form = q.find(f"{{{ns.DATA}}}x")
    if form is None:
        raise StanzaError("bad-request", "expected a data form or <destroy/> (XEP-0045 §10)")
    if form.get("type") == "cancel":
        # §10.1.3: cancelling the initial configuration destroys the new room;
        # later, the room stays as it was.
        return [reply(el)] + (_destroy(room, element(MUC_OWNER, "destroy"))
                              if room.locked else [])
    if form.get("type") != "submit":
        raise StanzaError("bad-request", "the form must be submitted (XEP-0045 §10.1.2)")
    values = {}
    for f in form.findall(f"{{{ns.DATA}}}field"):
        var = f.get("var", "")
        if var in FIELDS:
            v = f.find(f"{{{ns.DATA}}}value")
            try:
                values[FIELDS[var][0]] = FIELDS[var][1](v.text or "" if v is not None else "")
            except ValueError:
                raise StanzaError("not-acceptable", f"bad value for {var}") from None
    for attr, value in values.items():
        setattr(room.config, attr, value)
    if room.history.maxlen != room.config.history_length:
        room.history = deque(room.history, maxlen=max(room.config.history_length, 0))
    room.locked = False                 # instant (empty submit, §10.1.2) or configured
    out = [reply(el)]
    if room.config.members_only:        # §9.4 by configuration: 322
        for occ in [o for o in room.occupants.values()
                    if RANK[room.affiliation(o.bare)] < RANK["member"]]:
            out += room.removal(occ, "322", None, None)
    return out


def config_form(room: Room) -> Element:
    """The muc#owner query holding a form of the fields the engine knows."""
    q = element(MUC_OWNER, "query")
    x = child(q, ns.DATA, "x", type="form")
    f = child(x, ns.DATA, "field", var="FORM_TYPE", type="hidden")
    child(f, ns.DATA, "value", CONFIG_FORM)
    for var, (attr, _) in FIELDS.items():
        value = getattr(room.config, attr)
        f = child(x, ns.DATA, "field", var=var)
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        child(f, ns.DATA, "value", text)
    return q


def _destroy(room: Room, destroy: Element) -> list[Element]:
    """§10.9: every session gets unavailable, affiliation and role none, and
    the <destroy/> with the alternate venue and reason."""
    out = []
    for occ in room.occupants.values():
        for j in occ.jids:
            p = stanza("presence", frm=room.nick_jid(occ.nick), to=j, type="unavailable")
            x = child(p, MUC_USER, "x")
            child(x, MUC_USER, "item", affiliation="none", role="none")
            d = child(x, MUC_USER, "destroy")
            if destroy.get("jid"):
                d.set("jid", destroy.get("jid", ""))
            for c in destroy:
                if isinstance(c.tag, str) and c.tag == f"{{{MUC_OWNER}}}reason":
                    child(d, MUC_USER, "reason", c.text or "")
            child(x, MUC_USER, "status", code="110")
            out.append(p)
    room.occupants.clear()
    room.destroyed = True
    return out
