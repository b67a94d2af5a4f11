"""One XEP-0045 room as a pure state machine: stanzas in, stanzas out.

No I/O, no asyncio, no clock: each entry point takes the sender's full JID,
the stanza it sent to the room (or to ``room@service/nick``) and ``now``
(seconds since the epoch), mutates the room and returns the stanzas to
deliver, in delivery order, each with ``from`` and ``to`` set. The service
module routes them; storage and clustering are its business.

Errors
    A refused stanza raises :class:`~vinespy.errors.StanzaError` *before*
    anything is mutated, so the caller answers with
    :func:`~vinespy.xml.error_reply` (whose ``from`` is the stanza's ``to``,
    the room or ``room/nick``, as XEP-0045 §7.2 wants). Stanzas the XEP says
    to drop (an unavailable presence from a non-occupant, errors) return
    ``[]``.

Nicknames
    Enforced with the PRECIS NicknameCasePreserved profile (RFC 8266 §2.2):
    that is the nick shown; uniqueness compares the NicknameCaseMapped form
    (RFC 8266 §2.4), so "Romeo" and "romeo" conflict without every nick
    being shown lower-cased. A nick that enforcement changed is announced
    with status 210 (§7.2.3). A nick the profile refuses: ``<jid-malformed/>``.

Occupant ids (XEP-0421)
    HMAC-SHA-256 of the real bare JID under the room's secret: stable per
    user and room, unlinkable across rooms; a client-supplied one is removed.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

from precis_i18n import get_profile

from .. import ns
from ..errors import StanzaError
from ..jid import JID, JIDError
from ..rules.stamps import format_datetime, parse_datetime
from ..xml import Element, child, local_name, namespace, serialize, stanza

MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_ADMIN = MUC + "#admin"
MUC_OWNER = MUC + "#owner"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"

_SHOWN = get_profile("NicknameCasePreserved")
_COMPARED = get_profile("NicknameCaseMapped")

# §5.2: affiliations by rank; roles each affiliation gets on entry (§5.1.2).
RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
ROLES = ("none", "visitor", "participant", "moderator")


@dataclass
class RoomConfig:
    """The muc#roomconfig options the engine acts on (§10.2)."""

    name: str = ""
    description: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""
    max_users: int = 0                  # 0: no limit
    whois: str = "moderators"           # "anyone": non-anonymous (status 100)
    allow_invites: bool = False
    change_subject: bool = False        # participants may set the subject
    history_length: int = 20


@dataclass
class Occupant:
    """One nick in the room; several sessions of one bare JID may share it (§7.2.6)."""

    nick: str
    bare: JID
    jids: list[JID]
    role: str
    presence: list[Element] = field(default_factory=list)   # payload of the last presence


@dataclass
class HistoryItem:
    stamp: float
    nick: str
    message: Element            # as broadcast, without ``to``


def prepare_nick(nick: str) -> str:
    """The nick as shown (RFC 8266), or ``<jid-malformed/>``."""
    try:
        shown: str = _SHOWN.enforce(nick)
    except UnicodeError as exc:
        raise StanzaError("jid-malformed", f"nickname {nick!r}: {exc}") from None
    return shown


def _key(nick: str) -> str:
    key: str = _COMPARED.enforce(nick)
    return key


class Room:
    """A room: config, affiliations by bare JID, occupants by nick, subject, history."""

    def __init__(self, jid: JID, secret: bytes, config: RoomConfig | None = None, *,
                 creator: JID | None = None) -> None:
        """``creator`` given: a new room, locked until its owner configures it
        or accepts the instant room (§10.1.1)."""
        self.jid = jid.bare
        self.secret = secret
        self.config = config or RoomConfig()
        self.affiliations: dict[JID, str] = {}
        self.occupants: dict[str, Occupant] = {}        # by shown nick, join order
        self.subject = ""
        self.subject_by = ""
        self.history: deque[HistoryItem] = deque(maxlen=self.config.history_length)
        self.locked = creator is not None
        self.destroyed = False
        self._created = creator is not None
        if creator is not None:
            self.affiliations[creator.bare] = "owner"

    # -- queries -------------------------------------------------------------

    def affiliation(self, jid: JID) -> str:
        return self.affiliations.get(jid.bare, "none")

    def occupant_of(self, jid: JID) -> Occupant | None:
        """The occupant whose session is the full JID ``jid``."""
        for occ in self.occupants.values():
            if jid in occ.jids:
                return occ
        return None

    def by_nick(self, nick: str) -> Occupant | None:
        try:
            key = _key(nick)
        except UnicodeError:
            return None
        for occ in self.occupants.values():
            if _key(occ.nick) == key:
                return occ
        return None

    @property
    def empty(self) -> bool:
        """No occupant: a non-persistent room is to be destroyed (§10.9)."""
        return not self.occupants

    def occupant_id(self, bare: JID) -> str:
        digest = hmac.new(self.secret, str(bare.bare).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def _sees_jids(self, viewer: Occupant) -> bool:
        return self.config.whois == "anyone" or viewer.role == "moderator"

    def entry_role(self, affiliation: str) -> str:
        if RANK[affiliation] >= RANK["admin"]:
            return "moderator"
        if self.config.moderated and affiliation == "none":
            return "visitor"
        return "participant"

    # -- presence (§7.2, §7.3, §7.6, §7.7) --------------------------------------

    def presence(self, frm: JID, el: Element, now: float) -> list[Element]:
        """Enter (§7.2), change presence (§7.7) or nick (§7.6), exit (§7.3)."""
        to = _to(el)
        ptype = el.get("type")
        occ = self.occupant_of(frm)
        if ptype == "unavailable":
            return self._exit(occ, frm, el) if occ is not None else []
        if ptype is not None:
            return []                   # errors, subscriptions: nothing for a room
        if not to.resource:
            raise StanzaError("jid-malformed", "a nickname is required (XEP-0045 §7.2.1)")
        nick = prepare_nick(to.resource)
        if occ is None:
            return self._join(frm, el, nick, nick != to.resource, now)
        if _key(nick) != _key(occ.nick):
            return self._change_nick(occ, el, nick)
        occ.presence = _payload(el)
        return self.broadcast_presence(occ)

    def _join(self, frm: JID, el: Element, nick: str, modified: bool,
              now: float) -> list[Element]:
        aff = self.affiliation(frm)
        if self.locked and aff != "owner":
            raise StanzaError("item-not-found", "the room is locked (XEP-0045 §7.2.11)")
        if aff == "outcast":
            raise StanzaError("forbidden", "you are banned from this room (XEP-0045 §7.2.8)")
        if self.config.members_only and RANK[aff] < RANK["member"]:
            raise StanzaError("registration-required",
                              "the room is members-only (XEP-0045 §7.2.7)")
        x = _first(el, MUC, "x")
        if self.config.password and aff != "owner":
            given = _first(x, MUC, "password") if x is not None else None
            if given is None or (given.text or "") != self.config.password:
                raise StanzaError("not-authorized", "a password is required (XEP-0045 §7.2.5)")
        # Built before any change: a malformed <history/> refuses the entry whole.
        history = self._history_for(frm, _first(x, MUC, "history"), now)
        same = self.by_nick(nick)
        if same is not None and same.bare != frm.bare:
            raise StanzaError("conflict", f"nickname {nick!r} is in use (XEP-0045 §7.2.6)")
        if same is not None:            # another session of the same user (§7.2.6)
            same.jids.append(frm)
            return self._to_new_session(same, frm, history, modified)
        if (self.config.max_users and len(self.occupants) >= self.config.max_users
                and RANK[aff] < RANK["admin"]):
            raise StanzaError("service-unavailable", "the room is full (XEP-0045 §7.2.10)")
        occ = Occupant(nick, frm.bare, [frm], self.entry_role(aff), _payload(el))
        out = []
        for other in self.occupants.values():           # §7.2.3: others first
            out.append(self._presence_of(other, occ, frm))
        self.occupants[nick] = occ
        for other in self.occupants.values():
            if other is not occ:
                out += [self._presence_of(occ, other, j) for j in other.jids]
        out += self._to_new_session(occ, frm, history, modified)
        return out

    def _to_new_session(self, occ: Occupant, frm: JID, history: list[Element],
                        modified: bool) -> list[Element]:
        """Self-presence (110 last of the presences), then history, then subject."""
        if len(occ.jids) > 1:
            out = [self._presence_of(o, occ, frm) for o in self.occupants.values()
                   if o is not occ]
        else:
            out = []
        codes = ["110"]
        if self.config.whois == "anyone":
            codes.append("100")
        if self._created:
            codes.append("201")
            self._created = False
        if modified:
            codes.append("210")
        out.append(self._presence_of(occ, occ, frm, codes))
        out += history
        subject = stanza("message", frm=self.nick_jid(self.subject_by) if self.subject_by
                         else self.jid, to=frm, type="groupchat")
        child(subject, ns.CLIENT, "subject", self.subject)
        out.append(subject)
        return out

    def _history_for(self, to: JID, hist: Element | None, now: float) -> list[Element]:
        """§7.2.15: the newest messages within maxstanzas/seconds/since/maxchars."""
        items = list(self.history)
        if hist is not None:
            try:
                if hist.get("seconds") is not None:
                    items = [i for i in items if i.stamp >= now - int(hist.get("seconds", ""))]
                if hist.get("since") is not None:
                    since = parse_datetime(hist.get("since", "")).timestamp()
                    items = [i for i in items if i.stamp >= since]
                if hist.get("maxstanzas") is not None:
                    n = int(hist.get("maxstanzas", ""))
                    if n < 0:
                        raise ValueError(n)
                    items = items[max(len(items) - n, 0):] if n else []
            except ValueError:
                raise StanzaError("bad-request", "malformed <history/> (XEP-0045 §7.2.15)") \
                    from None
            maxchars = hist.get("maxchars")
            if maxchars is not None:
                limit, kept = int(maxchars) if maxchars.isdigit() else 0, []
                for i in reversed(items):
                    limit -= len(_xml(i.message))
                    if limit < 0:
                        break
                    kept.append(i)
                items = kept[::-1]
        out = []
        for i in items:
            msg = copy.deepcopy(i.message)
            msg.set("to", str(to))
            when = datetime.fromtimestamp(i.stamp, timezone.utc)
            child(msg, ns.DELAY, "delay", stamp=format_datetime(when), **{"from": str(self.jid)})
            out.append(msg)
        return out

    def _exit(self, occ: Occupant, frm: JID, el: Element) -> list[Element]:
        if len(occ.jids) > 1:           # other sessions stay: only this one leaves
            occ.jids.remove(frm)
            return [self._unavailable(occ, occ, frm, ["110"], el)]
        out = [self._unavailable(occ, o, j, [], el) for o in self.occupants.values()
               if o is not occ for j in o.jids]
        out.append(self._unavailable(occ, occ, frm, ["110"], el))
        del self.occupants[occ.nick]
        return out

    def _change_nick(self, occ: Occupant, el: Element, nick: str) -> list[Element]:
        """§7.6: unavailable with 303 and the new nick, then the new presence."""
        same = self.by_nick(nick)
        if same is not None and same is not occ:
            raise StanzaError("conflict", f"nickname {nick!r} is in use (XEP-0045 §7.6.3)")
        out = []
        for o in self.occupants.values():
            for j in o.jids:
                codes = ["303", "110"] if o is occ else ["303"]
                out.append(self._unavailable(occ, o, j, codes, None, new_nick=nick))
        del self.occupants[occ.nick]
        occ.nick = nick
        occ.presence = _payload(el)
        self.occupants[nick] = occ
        return out + self.broadcast_presence(occ)

    def broadcast_presence(self, occ: Occupant, extra: Iterable[str] = ()) -> list[Element]:
        """``occ``'s presence to every session, its own last with 110 (§7.7)."""
        out = [self._presence_of(occ, o, j, list(extra))
               for o in self.occupants.values() if o is not occ for j in o.jids]
        out += [self._presence_of(occ, occ, j, ["110", *extra]) for j in occ.jids]
        return out

    # -- messages (§7.4, §7.5, §7.8.2) ------------------------------------------

    def message(self, frm: JID, el: Element, now: float) -> list[Element]:
        """Groupchat (§7.4) and subject (§8.1), private (§7.5), invitations (§7.8.2)."""
        to = _to(el)
        mtype = el.get("type", "normal")
        if mtype == "error":
            return []
        occ = self.occupant_of(frm)
        if to.resource:
            return self._private(occ, el, to.resource, mtype)
        if mtype != "groupchat":
            invites = [i for x in _all(el, MUC_USER, "x") for i in _all(x, MUC_USER, "invite")]
            if invites:
                return self._invite(frm, occ, invites)
            raise StanzaError("bad-request", "only groupchat messages and invitations go to"
                              " the room itself (XEP-0045 §7.4)")
        if occ is None:
            raise StanzaError("not-acceptable", "only occupants may send to the room"
                              " (XEP-0045 §7.4)")
        if occ.role == "visitor":
            raise StanzaError("forbidden", "visitors have no voice in a moderated room"
                              " (XEP-0045 §7.4)")
        subject = _first(el, ns.CLIENT, "subject")
        body = _first(el, ns.CLIENT, "body")
        if subject is not None and body is None:
            if occ.role != "moderator" and not self.config.change_subject:
                raise StanzaError("forbidden", "you may not change the subject (XEP-0045 §8.1)")
            self.subject, self.subject_by = subject.text or "", occ.nick
        msg = stanza("message", frm=self.nick_jid(occ.nick), type="groupchat",
                     id=el.get("id"))
        for c in _payload(el):
            msg.append(c)
        child(msg, OCCUPANT_ID, "occupant-id", id=self.occupant_id(occ.bare))
        if body is not None:
            self.history.append(HistoryItem(now, occ.nick, msg))
        out = []
        for o in self.occupants.values():
            for j in o.jids:
                m = copy.deepcopy(msg)
                m.set("to", str(j))
                out.append(m)
        return out

    def _private(self, occ: Occupant | None, el: Element, nick: str,
                 mtype: str) -> list[Element]:
        """§7.5: occupant to occupant through the room, marked with muc#user."""
        if mtype == "groupchat":
            raise StanzaError("bad-request", "a private message may not be of type"
                              " groupchat (XEP-0045 §7.5)")
        if occ is None:
            raise StanzaError("not-acceptable", "only occupants may send private messages"
                              " (XEP-0045 §7.5)")
        target = self.by_nick(nick)
        if target is None:
            raise StanzaError("item-not-found", f"no occupant {nick!r} (XEP-0045 §7.5)")
        out = []
        for j in target.jids:
            m = stanza("message", frm=self.nick_jid(occ.nick), to=j, type=el.get("type"),
                       id=el.get("id"))
            for c in _payload(el):
                m.append(c)
            child(m, MUC_USER, "x")
            child(m, OCCUPANT_ID, "occupant-id", id=self.occupant_id(occ.bare))
            out.append(m)
        return out

    def _invite(self, frm: JID, occ: Occupant | None,
                invites: list[Element]) -> list[Element]:
        """§7.8.2 mediated invitations; in a members-only room the invitee
        becomes a member when the inviter may invite (§9.3)."""
        aff = self.affiliation(frm)
        if occ is None:
            raise StanzaError("not-acceptable", "only occupants may invite (XEP-0045 §7.8.2)")
        if self.config.members_only and not (self.config.allow_invites
                                             or RANK[aff] >= RANK["admin"]):
            raise StanzaError("forbidden", "only admins may invite to this members-only room"
                              " (XEP-0045 §7.8.2)")
        try:                            # all invitees parsed before any becomes a member
            invitees = [JID.parse(inv.get("to", "")) for inv in invites]
        except JIDError:
            raise StanzaError("jid-malformed", "invitee (XEP-0045 §7.8.2)") from None
        out = []
        for inv, invitee in zip(invites, invitees):
            if self.config.members_only and self.affiliation(invitee) == "none":
                self.affiliations[invitee.bare] = "member"
            m = stanza("message", frm=self.jid, to=invitee)
            x = child(m, MUC_USER, "x")
            i = child(x, MUC_USER, "invite", **{"from": str(frm)})
            reason = _first(inv, MUC_USER, "reason")
            if reason is not None:
                child(i, MUC_USER, "reason", reason.text or "")
            if self.config.password:
                child(x, MUC_USER, "password", self.config.password)
            out.append(m)
        return out

    # -- stanza builders -------------------------------------------------------

    def nick_jid(self, nick: str) -> JID:
        return JID(self.jid.local, self.jid.domain, nick)

    def _item(self, x: Element, about: Occupant, viewer: Occupant, to: JID,
              role: str | None = None) -> Element:
        """The muc#user item; the real JID only for whom may see it (§5.1.3 whois),
        and in one's own presence that session's own JID."""
        item = child(x, MUC_USER, "item", affiliation=self.affiliation(about.bare),
                     role=role or about.role)
        if viewer is about:
            item.set("jid", str(to))
        elif self._sees_jids(viewer):
            item.set("jid", str(about.jids[0]))
        return item

    def _presence_of(self, about: Occupant, viewer: Occupant, to: JID,
                     codes: Iterable[str] = ()) -> Element:
        p = stanza("presence", frm=self.nick_jid(about.nick), to=to)
        for c in about.presence:
            p.append(copy.deepcopy(c))
        x = child(p, MUC_USER, "x")
        self._item(x, about, viewer, to)
        for code in codes:
            child(x, MUC_USER, "status", code=code)
        child(p, OCCUPANT_ID, "occupant-id", id=self.occupant_id(about.bare))
        return p

    def _unavailable(self, about: Occupant, viewer: Occupant, to: JID, codes: list[str],
                     el: Element | None, *, new_nick: str | None = None,
                     actor: str | None = None, reason: str | None = None) -> Element:
        p = stanza("presence", frm=self.nick_jid(about.nick), to=to, type="unavailable")
        status = _first(el, ns.CLIENT, "status") if el is not None else None
        if status is not None:
            p.append(copy.deepcopy(status))
        x = child(p, MUC_USER, "x")
        item = self._item(x, about, viewer, to, role=about.role if new_nick else "none")
        if new_nick is not None:
            item.set("nick", new_nick)
        if actor is not None:
            child(item, MUC_USER, "actor", nick=actor)
        if reason is not None:
            child(item, MUC_USER, "reason", reason)
        for code in codes:
            child(x, MUC_USER, "status", code=code)
        child(p, OCCUPANT_ID, "occupant-id", id=self.occupant_id(about.bare))
        return p

    def removal(self, occ: Occupant, code: str, actor: str | None,
                reason: str | None) -> list[Element]:
        """Kick (307), ban (301), members-only removal (321): the removed
        occupant's sessions are told too, with 110 (§8.2, §9.1)."""
        out = [self._unavailable(occ, o, j, [code, "110"] if o is occ else [code], None,
                                 actor=actor, reason=reason)
               for o in self.occupants.values() for j in o.jids]
        del self.occupants[occ.nick]
        return out


def _to(el: Element) -> JID:
    try:
        return JID.parse(el.get("to", ""))
    except JIDError as exc:
        raise StanzaError("jid-malformed", str(exc)) from None


def _first(el: Element | None, nsuri: str, name: str) -> Element | None:
    if el is None:
        return None
    return el.find(f"{{{nsuri}}}{name}")


def _all(el: Element, nsuri: str, name: str) -> list[Element]:
    return el.findall(f"{{{nsuri}}}{name}")


def _payload(el: Element) -> list[Element]:
    """Copies of ``el``'s children but the MUC ones and occupant-ids a client
    may not set (XEP-0421 §4)."""
    return [copy.deepcopy(c) for c in el
            if isinstance(c.tag, str) and namespace(c) not in (MUC, MUC_USER, OCCUPANT_ID)
            and not (namespace(c) == ns.DELAY and local_name(c) == "delay")]


def _xml(el: Element) -> bytes:
    return serialize(el)
