"""XEP-0313 (Message Archive Management, ``urn:xmpp:mam:2``) rules, without I/O.

What the MAM module asks before and after it touches the archive store:

Queries
    :func:`parse_query` turns an IQ set's ``<query/>`` into a
    :class:`MamQuery`: the data form's fields (§4.1: ``with``, ``start``,
    ``end``; with ``urn:xmpp:mam:2#extended``, ``before-id``, ``after-id``
    and ``ids``), the XEP-0059 ``<set/>`` (:mod:`~vinespy.rules.rsm`),
    ``queryid`` and ``<flip-page/>`` (§4.3.4), or raises the error the XEPs
    name. :func:`query_form` is the form an IQ get of the query returns
    (§4.1.5, "Retrieving form fields"). :func:`peer` is the remote JID a
    message is filed under and :func:`with_matches` what 'with' selects.
Replies
    :func:`result_message` wraps one archived stanza for the client (§4.2,
    XEP-0297, XEP-0203), :func:`fin` ends a page (§4.3), :func:`metadata`
    answers a metadata request (§5); :data:`FEATURES` is what the account's
    bare JID advertises (§7).
Archiving
    :func:`should_archive` says whether a message belongs in a user archive
    (§6.1.1 with the XEP-0334 hints); :func:`stamp_stanza_id` and
    :func:`strip_stanza_ids` apply XEP-0359's business rules to a message the
    server delivers to an account (§3.5).
Preferences (XEP-0441, split out of XEP-0313 in its 0.7)
    :func:`parse_prefs`, :func:`prefs_element` and :func:`decide`.
Timestamps are XEP-0082's (:mod:`~vinespy.rules.stamps`).

Section numbers are those of XEP-0313's table of contents (§4.1.5 "Retrieving
form fields", §4.3.2 "Requesting pages", §6.1.1 "User Archives").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Iterable

from lxml import etree

from .. import ns
from ..errors import StanzaError
from ..jid import JID, JIDError
from ..xml import Element, child, element, local_name, namespace, stanza
from . import rsm as rsm_rules
from .rsm import Rsm
from .stamps import format_datetime, parse_datetime

NS = ns.MAM
DEFAULT_PAGE = 50       # results of a query without <max/>
MAX_PAGE = 250          # the most results one page holds, whatever <max/> asks
MAX_IDS = 250           # values of the 'ids' field one query may name

# §7: both, on every archiving JID (the accounts' bare JIDs); XEP-0359 §5:
# an entity that follows its business rules SHOULD announce urn:xmpp:sid:0.
FEATURES = (ns.MAM, ns.MAM_EXTENDED, ns.SID)


def _bad(text: str) -> StanzaError:
    return StanzaError("bad-request", text)


# -- queries (§4) ----------------------------------------------------------------

@dataclass(frozen=True)
class MamQuery:
    """What a query asks of a user archive; every filter applies at once.

    ``with_jid``: §4.1.1, a bare JID matches any resource of it, a full one
    only itself, and the account's own JID only messages both to and from it
    (the store's work). ``start``/``end``: §4.1.2, inclusive, aware UTC.
    ``after_id``/``before_id``: §4.1.3, exclusive bounds; ``ids``: only these.
    Any of these three naming an id not in the archive is ``<item-not-found/>``,
    as is an RSM ``after``/``before`` that does not exist (§4.3.2). ``rsm``:
    the page (see :class:`~vinespy.rules.rsm.Rsm`); ``flip``: send the page
    newest first (§4.3.4), which changes nothing else (not ``<fin/>``'s
    ``first``/``last``, which stay the page's oldest and newest ids).
    """

    rsm: Rsm = field(default_factory=lambda: Rsm(max=DEFAULT_PAGE))
    queryid: str | None = None
    with_jid: JID | None = None
    start: datetime | None = None
    end: datetime | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: tuple[str, ...] = ()
    flip: bool = False


def _values(f: Element) -> list[str]:
    return [(v.text or "").strip() for v in f.findall(f"{{{ns.DATA}}}value")]


def _single(var: str, values: list[str]) -> str | None:
    """The value of a single-valued field; an empty one is no filter."""
    values = [v for v in values if v]
    if len(values) > 1:
        raise _bad(f"the {var!r} field takes one value, not {len(values)} (XEP-0004 §3.3)")
    return values[0] if values else None


def _jid(var: str, text: str) -> JID:
    try:
        return JID.parse(text)
    except JIDError as exc:
        raise _bad(f"the {var!r} field is not a valid JID: {exc} (XEP-0313 §4.1.1)") from None


def _when(var: str, text: str) -> datetime:
    try:
        # A time without its zone is taken as UTC: §4.1.2 requires the
        # XEP-0082 profile of clients, but slixmpp sends naive datetimes so.
        return parse_datetime(text, assume_utc=True)
    except ValueError as exc:
        raise _bad(f"the {var!r} field must be an XEP-0082 DateTime (XEP-0313 §4.1.2):"
                   f" {exc}") from None


def _form_fields(x: Element) -> dict[str, list[str]]:
    """The fields of a submitted form with FORM_TYPE urn:xmpp:mam:2."""
    if x.get("type") != "submit":
        raise _bad("the query form must be a data form of type 'submit' (XEP-0004 §3.1)")
    fields: dict[str, list[str]] = {}
    for f in x.findall(f"{{{ns.DATA}}}field"):
        var = f.get("var")
        if not var:
            raise _bad("a field of a submitted form needs a 'var' (XEP-0004 §3.2)")
        if var in fields:
            raise _bad(f"the field {var!r} appears twice (XEP-0004 §3.2)")
        fields[var] = _values(f)
    if fields.pop("FORM_TYPE", None) != [NS]:
        raise _bad(f"the query form's FORM_TYPE must be {NS} (XEP-0313 §4.1)")
    return fields


_FIELDS = ("with", "start", "end", "after-id", "before-id", "ids")


def parse_form(x: Element | None) -> MamQuery:
    """The filters of the query's data form (a :class:`MamQuery` with the
    default page).

    A field this server does not know is ``<feature-not-implemented/>``
    (§4.1.5: "If a client includes a form field that the server does not
    recognise, the server MUST respond with a 'feature-not-implemented'
    error"); 'include-groupchat' is one (§4.1.4: a server that does not
    advertise urn:xmpp:mam:2#groupchat-field rejects it)."""
    if x is None:
        return MamQuery()
    fields = _form_fields(x)
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise StanzaError("feature-not-implemented",
                          f"unsupported query field(s): {', '.join(unknown)} (XEP-0313 §4.1.5)")
    with_text = _single("with", fields.get("with", []))
    start = _single("start", fields.get("start", []))
    end = _single("end", fields.get("end", []))
    ids = tuple(dict.fromkeys(v for v in fields.get("ids", []) if v))
    if len(ids) > MAX_IDS:
        raise StanzaError("policy-violation", f"at most {MAX_IDS} ids in one query")
    return MamQuery(
        with_jid=None if with_text is None else _jid("with", with_text),
        start=None if start is None else _when("start", start),
        end=None if end is None else _when("end", end),
        after_id=_single("after-id", fields.get("after-id", [])),
        before_id=_single("before-id", fields.get("before-id", [])),
        ids=ids)


def parse_query(query: Element, *, default: int = DEFAULT_PAGE,
                limit: int = MAX_PAGE) -> MamQuery:
    """The ``<query xmlns='urn:xmpp:mam:2'/>`` of an IQ set, checked: a page
    of ``default`` results unless its ``<set/>`` asks otherwise, never more
    than ``limit``. Raises :class:`~vinespy.errors.StanzaError`:
    ``<bad-request/>`` for a malformed form, JID or timestamp (a form not of
    type submit or not of FORM_TYPE urn:xmpp:mam:2, one value too many),
    ``<feature-not-implemented/>`` for an unknown field (§4.1.5), RSM
    ``<index/>`` (XEP-0059 §2.6) or a pubsub archive's ``node`` (XEP-0442:
    user archives have none)."""
    if namespace(query) != NS or local_name(query) != "query":
        raise _bad(f"not a <query xmlns='{NS}'/>")
    if query.get("node") is not None:
        raise StanzaError("feature-not-implemented",
                          "pubsub node archives (XEP-0442) are not served here")
    forms = query.findall(f"{{{ns.DATA}}}x")
    if len(forms) > 1:
        raise _bad("a query holds one data form (XEP-0313 §4.1)")
    filters = parse_form(forms[0] if forms else None)
    page = rsm_rules.parse_set(query.find(f"{{{ns.RSM}}}set"), default=default, limit=limit)
    return replace(filters, rsm=page, queryid=query.get("queryid"),
                   flip=query.find(f"{{{NS}}}flip-page") is not None)


def _form_field(x: Element, var: str, type: str, value: str | None = None) -> Element:
    f = child(x, ns.DATA, "field", type=type, var=var)
    if value is not None:
        child(f, ns.DATA, "value", value)
    return f


def query_form() -> Element:
    """The ``<query/>`` answering an IQ get of it: every field a query may
    use (§4.1.5), none marked required (§4.1), 'with'/'start'/'end' of the
    types the XEP fixes, and 'ids' open to any value (XEP-0122 ``<open/>``:
    the list of ids MUST NOT be sent)."""
    q = element(NS, "query")
    x = child(q, ns.DATA, "x", type="form")
    _form_field(x, "FORM_TYPE", "hidden", NS)
    _form_field(x, "with", "jid-single")
    for var in ("start", "end", "before-id", "after-id"):
        _form_field(x, var, "text-single")
    ids = _form_field(x, "ids", "list-multi")
    validate = child(ids, ns.XDATA_VALIDATE, "validate", datatype="xs:string")
    child(validate, ns.XDATA_VALIDATE, "open")
    return q


# -- what 'with' matches (§3, §4.1.1) -------------------------------------------

def peer(owner: JID, message: Element) -> JID | None:
    """The remote JID a message has in ``owner``'s archive (§3): its 'to'
    when the owner sent it, else its 'from'; the owner's own JID for a
    message to self. None when the address it needs is missing or invalid."""
    try:
        frm = JID.parse(message.get("from", ""))
        return JID.parse(message.get("to", "")) if frm.bare == owner.bare else frm
    except JIDError:
        return None


def with_matches(with_jid: JID, remote: JID) -> bool:
    """Whether a message whose :func:`peer` is ``remote`` matches the query's
    'with' (§4.1.1): a bare 'with' matches every resource of it (SHOULD), a
    full one only itself. The account's own bare JID matches only messages
    both to and from it (MUST), which is what a remote JID of the owner is."""
    return remote == with_jid or (with_jid.is_bare and remote.bare == with_jid)


# -- replies (§4.2, §4.3, §5) ------------------------------------------------------

def result_message(to: JID | str, queryid: str | None, archived_id: str, stamp: datetime,
                   message: Element, *, frm: JID | str | None = None,
                   id: str | None = None) -> Element:
    """One result of a query (§4.2): ``<message/>`` to the querying resource
    with ``<result queryid id/>`` (queryid only when the query had one; ``id``
    the archive's UID), holding ``<forwarded/>`` (XEP-0297) with ``<delay
    stamp/>`` (XEP-0203: when the server received the message) and a copy of
    the archived stanza. ``frm`` is the archive's address (the client checks
    results come from the entity it queried, §8.2). The archived stanza keeps
    its jabber:client namespace (XEP-0297 §3.2 rule 3), declared again inside
    ``<forwarded/>``. ``message`` is moved into the result, not copied (the
    caller parsed it for this result alone)."""
    if namespace(message) != ns.CLIENT:
        raise ValueError(f"an archived stanza is in {ns.CLIENT}, not {namespace(message)!r}")
    out = stanza("message", to=to, frm=frm, id=id)
    result = child(out, NS, "result", id=archived_id)
    if queryid is not None:
        result.set("queryid", queryid)
    forwarded = child(result, ns.FORWARD, "forwarded")
    child(forwarded, ns.DELAY, "delay", stamp=format_datetime(stamp))
    forwarded.append(message)
    return out


def fin(complete: bool, first: str | None = None, last: str | None = None,
        count: int | None = None, *, stable: bool = True,
        index: int | None = None) -> Element:
    """The ``<fin/>`` of the IQ result ending a query (§4.3): ``complete='true'``
    when the page reached the end of the results (MUST, §4.3.2; omitted
    otherwise), ``stable='false'`` when the results may still change (MUST,
    §4.3.2; nothing when stable), and the RSM ``<set/>`` with the page's first
    and last UIDs in chronological order (none for an empty page)."""
    f = element(NS, "fin")
    if complete:
        f.set("complete", "true")
    if not stable:
        f.set("stable", "false")
    f.append(rsm_rules.set_element(first, last, count, index))
    return f


def metadata(first: tuple[str, datetime] | None, last: tuple[str, datetime] | None
             ) -> Element:
    """The answer to ``<metadata/>`` (§5): the id and timestamp of the first
    and last messages of the archive; nothing inside for an empty archive
    (which has neither)."""
    m = element(NS, "metadata")
    for name, entry in (("start", first), ("end", last)):
        if entry is not None:
            child(m, NS, name, id=entry[0], timestamp=format_datetime(entry[1]))
    return m


# -- what a user archive keeps (§6.1.1, XEP-0334) ------------------------------------
# Beside a <body/>, what a person reads or acts on that travels outside one:
# §6.1.1 "MAY include additional non-conversation messages". Paths under the
# message; encrypted payloads count only with their payload (an OMEMO message
# without <payload/> is a key transport, session plumbing).
CONTENT = {
    f"{{{ns.CLIENT}}}body": "body",
    f"{{{ns.CLIENT}}}subject": "subject",
    "{eu.siacs.conversations.axolotl}encrypted/{eu.siacs.conversations.axolotl}payload":
        "OMEMO (0.3)",
    "{urn:xmpp:omemo:2}encrypted/{urn:xmpp:omemo:2}payload": "OMEMO (2)",
    "{urn:xmpp:openpgp:0}openpgp": "OpenPGP (XEP-0373)",
    "{jabber:x:encrypted}x": "legacy OpenPGP (XEP-0027)",
    "{jabber:x:conference}x": "room invitation (XEP-0249)",
    "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}invite":
        "mediated room invitation (XEP-0045)",
    **{f"{{urn:xmpp:jingle-message:{v}}}{name}": "call (XEP-0353)"
       for v in (0, 1)
       for name in ("propose", "retract", "accept", "proceed", "reject", "finish")},
    # A person's read state, which clients sync from the archive (Conversations
    # does; Prosody archives them too): received, displayed, acknowledged.
    **{f"{{urn:xmpp:chat-markers:0}}{name}": "chat marker (XEP-0333)"
       for name in ("received", "displayed", "acknowledged")},
    "{urn:xmpp:reactions:0}reactions": "reaction (XEP-0444)",
    "{urn:xmpp:message-retract:1}retract": "retraction (XEP-0424)",
}
_NO_STORE = (f"{{{ns.HINTS}}}no-store", f"{{{ns.HINTS}}}no-permanent-store")
_STORE = f"{{{ns.HINTS}}}store"


def _first_step(path: str) -> str:
    """``{ns}a`` of the path ``{ns}a/{ns}b`` (the ``/`` of a namespace aside)."""
    end = path.find("/", path.find("}") + 1)
    return path if end < 0 else path[:end]


# CONTENT with the tag of each path's first step: a path whose first step
# is not a child is not looked for (lxml's find() parses its path on every
# call, ~10 µs; archive_reason runs for every message).
_CONTENT = tuple((path, _first_step(path), why) for path, why in CONTENT.items())
_SID = f"{{{ns.SID}}}stanza-id"
_SID_NSMAP = ns.default(ns.SID)


def archive_reason(message: Element) -> str | None:
    """Why a message a user sends or receives goes into the user's archive,
    or None when it does not. In order:

    1. type 'error': never (§6.1.1 keeps 'normal' and 'chat'; XEP-0334
       §4.4 excludes errors even from ``<store/>``);
    2. ``<no-store/>`` or ``<no-permanent-store/>`` (XEP-0334 §4.1, §4.2:
       not in "any permanent ... archive (such as described in XEP-0313)"):
       never, even beside ``<store/>`` (the stricter wish of the sender wins);
    3. type 'groupchat': never in a user archive (§6.1.1 leaves it to the
       server; the room keeps its own archive, and this server does not
       advertise urn:xmpp:mam:2#groupchat-available);
    4. ``<store/>`` (XEP-0334 §4.4: "SHOULD be stored"): yes, whatever the
       content (how OMEMO clients mark their messages);
    5. type 'headline': no (§6.1.1 "not generally suggested");
    6. 'chat' or 'normal' (the default type) with a body or another
       :data:`CONTENT` element (chat markers among them: clients sync read
       state from the archive): yes; chat states, receipts and the like,
       which are state changes (§3), no.
    """
    kind = message.get("type") or "normal"
    if kind == "error":
        return None
    tags = {el.tag for el in message}       # one pass over the children
    if any(tag in tags for tag in _NO_STORE):
        return None
    if kind == "groupchat":
        return None
    if _STORE in tags:
        return "store hint (XEP-0334)"
    if kind not in ("chat", "normal"):
        return None
    return next((why for path, head, why in _CONTENT
                 if head in tags and (path == head or message.find(path) is not None)), None)


def should_archive(message: Element) -> bool:
    """Whether a message belongs in the archive of an account that sends or
    receives it (before the user's preferences: :func:`decide`)."""
    return archive_reason(message) is not None


# -- XEP-0359 stanza ids (§3.5) ---------------------------------------------------

def _same_jid(text: str | None, jid: JID, as_text: str) -> bool:
    if text is None:
        return False
    if text == as_text:
        return True                     # as the server writes it: no parsing
    try:
        return JID.parse(text) == jid
    except JIDError:
        return False


def strip_stanza_ids(message: Element, *by: JID) -> int:
    """Remove from ``message`` every ``<stanza-id/>`` claiming to be by one
    of ``by`` (XEP-0359 §3 rule 2: the entity generating ids "MUST delete
    that element even if they are not adding their own"), so that nobody
    else can make a client believe a message is in its archive under an id
    of their choosing. Every message delivered to an account needs this,
    archived or not. Returns how many were removed; other entities' ids and
    ``<origin-id/>`` stay (rule 3, and §2.2: the origin id MUST be preserved)."""
    found = _ids_by(message, by)
    for el in found:
        message.remove(el)
    return len(found)


def _ids_by(message: Element, by: tuple[JID, ...]) -> list[Element]:
    ids = list(message.iterchildren(_SID))
    if not ids:
        return ids              # the usual case, ~6 times a message: no JID made text
    named = [(jid, str(jid)) for jid in by]
    return [el for el in ids
            if any(_same_jid(el.get("by"), jid, text) for jid, text in named)]


def stamp_stanza_id(message: Element, by: JID, id: str) -> Element:
    """``message`` (changed in place) with any ``<stanza-id/>`` of ``by``
    replaced by ``<stanza-id by id/>``: the archive's address (the account's
    bare JID, §3.5) and the id the message has in it. At most one per ``by``
    (XEP-0359 §3 rule 4)."""
    strip_stanza_ids(message, by)
    return add_stanza_id(message, by, id)


def add_stanza_id(message: Element, by: JID, id: str) -> Element:
    """:func:`stamp_stanza_id` of a message known to carry no id of ``by``
    (just stripped)."""
    # Not xml.child: its look at the parent's nsmap costs more than the rest.
    etree.SubElement(message, _SID, {"by": str(by), "id": id}, nsmap=_SID_NSMAP)
    return message


def stanza_id(message: Element, by: JID) -> str | None:
    """The id ``by`` gave ``message`` (XEP-0359 §2.1), if it carries one."""
    found = _ids_by(message, (by,))
    return found[0].get("id") if found else None


def without_stanza_ids(message: Element, by: tuple[JID, ...],
                       serialize: Callable[[Element], bytes]) -> bytes:
    """``serialize(message)`` as if the ``<stanza-id/>`` elements of ``by``
    were not in it (an archive keeps a message without its own id: the
    result's id says it), without copying the message: they are taken out
    for the call and put back where they were."""
    ids = _ids_by(message, by)
    if not ids:
        return serialize(message)
    found = [(message.index(el), el) for el in ids]
    for el in ids:
        message.remove(el)
    try:
        return serialize(message)
    finally:
        for at, el in found:
            message.insert(at, el)


def origin_id(message: Element) -> str | None:
    """The id the sending client gave ``message`` (XEP-0359 §2.2), if any."""
    el = message.find(f"{{{ns.SID}}}origin-id")
    return None if el is None else el.get("id")


# -- preferences (XEP-0441) ---------------------------------------------------------
DEFAULTS = ("always", "never", "roster")
MAX_PREF_JIDS = 1000    # JIDs in the always and never lists together


@dataclass(frozen=True)
class Prefs:
    """A user's archiving preferences (XEP-0441 §2.1). ``default`` applies
    to JIDs in neither list; a JID in both is in ``never`` only."""

    default: str = "always"
    always: frozenset[JID] = frozenset()
    never: frozenset[JID] = frozenset()

    def __post_init__(self) -> None:
        if self.default not in DEFAULTS:
            raise ValueError(f"default must be one of {', '.join(DEFAULTS)}, not {self.default!r}")


def _jid_list(prefs: Element, name: str) -> frozenset[JID]:
    out = set()
    for holder in prefs.findall(f"{{{NS}}}{name}"):
        for j in holder.findall(f"{{{NS}}}jid"):
            text = (j.text or "").strip()
            try:
                out.add(JID.parse(text))
            except JIDError as exc:
                raise StanzaError("jid-malformed", f"<{name}/> holds {text!r}: {exc}") from None
    return frozenset(out)


def parse_prefs(el: Element, *, max_jids: int = MAX_PREF_JIDS) -> Prefs:
    """The preferences of an IQ set's ``<prefs xmlns='urn:xmpp:mam:2'/>``:
    ``default`` one of always/never/roster (XEP-0441 §2.1.1 "MUST be"),
    ``<bad-request/>`` otherwise; a missing ``<always/>`` or ``<never/>`` is
    an empty list (§2.1.2, §2.1.3); a JID that is not one is
    ``<jid-malformed/>``; more than ``max_jids`` is ``<policy-violation/>``.
    A JID listed in both is kept in ``never`` only: the reply shows the
    applied preferences, which MAY differ from those sent (§2.1)."""
    if namespace(el) != NS or local_name(el) != "prefs":
        raise _bad(f"not a <prefs xmlns='{NS}'/>")
    default = el.get("default")
    if default not in DEFAULTS:
        raise _bad(f"default must be one of {', '.join(DEFAULTS)}, not {default!r}"
                   " (XEP-0441 §2.1.1)")
    always, never = _jid_list(el, "always"), _jid_list(el, "never")
    if len(always) + len(never) > max_jids:
        raise StanzaError("policy-violation", f"at most {max_jids} JIDs in the preferences")
    return Prefs(default, always - never, never)


def _jids(parent: Element, name: str, jids: Iterable[JID]) -> None:
    holder = child(parent, NS, name)
    for j in sorted(jids, key=str):
        child(holder, NS, "jid", str(j))


def prefs_element(prefs: Prefs) -> Element:
    """``<prefs default/>`` with both lists, present even when empty
    (XEP-0441 §2.1: "MUST also be present")."""
    el = element(NS, "prefs", default=prefs.default)
    _jids(el, "always", prefs.always)
    _jids(el, "never", prefs.never)
    return el


def _listed(jids: frozenset[JID], peer: JID) -> bool:
    # XEP-0441 §2.3.1: a listed full JID matches the target as it is; a
    # listed bare JID matches the target without its resource. (Empty lists,
    # the usual case, cost no hashing: this runs twice per message.)
    return bool(jids) and (peer in jids or peer.bare in jids)


def decide(prefs: Prefs, peer: JID, in_roster: bool) -> bool:
    """Whether the preferences archive a message with ``peer``: the 'to' of
    one the user sends, the 'from' of one the user receives (XEP-0441
    §2.3.2, §2.3.3), full or bare. ``never`` first (the safer answer when a
    JID matches both), then ``always``, then the default; 'roster' asks
    whether ``peer``'s bare JID is in the user's roster (``in_roster``,
    §2.3.1)."""
    if _listed(prefs.never, peer):
        return False
    if _listed(prefs.always, peer):
        return True
    if prefs.default == "roster":
        return in_roster
    return prefs.default == "always"
