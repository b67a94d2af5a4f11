"""XEP-0060 (Publish-Subscribe) rules, without I/O.

What the pubsub module asks before it touches storage: who may do what on a
node (§4.1's affiliation table, under the node's access and publish models),
which node configuration is valid (§8.2, the ``pubsub#node_config`` data
form), what error each failure is (the pubsub-specific conditions of §7 and
§8 in ``http://jabber.org/protocol/pubsub#errors``), what a notification
looks like (§7.1.2, §7.2.2.1, §8.4.3), which JIDs a subscriber (§6.1.3.1)
or an owner (§8.8.2, with the subscribed entity's consent) may subscribe,
within which quotas (§6.1.3.9), and which nodes disco#items lists (§5.2).

Affiliations (§4.1), as applied here:

* owner: everything (subscribe, retrieve, publish, retract any item,
  configure, delete, purge, manage affiliations);
* publisher: subscribe, retrieve, publish, retract any item;
* publish-only: publish and retract its own items, nothing else;
* member: subscribe and retrieve even on a whitelist node; publish if the
  publish model is ``subscribers`` or ``open``;
* none: subscribe and retrieve if the access model is ``open``; publish if
  the publish model is ``open`` (or ``subscribers`` and it is subscribed);
* outcast: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from lxml import etree

from .. import ns
from ..errors import StanzaError
from ..jid import JID, JIDError
from ..xml import Element

NS = "http://jabber.org/protocol/pubsub"
NS_OWNER = f"{NS}#owner"
NS_EVENT = f"{NS}#event"
NS_ERRORS = f"{NS}#errors"
NODE_CONFIG = f"{NS}#node_config"
DATA = "jabber:x:data"

AFFILIATIONS = ("owner", "publisher", "publish-only", "member", "none", "outcast")


def error(condition: str, pubsub: str | None = None, *, feature: str | None = None,
          text: str | None = None, type: str | None = None) -> StanzaError:
    """A stanza error with XEP-0060's pubsub-specific condition (``pubsub``),
    e.g. ``error("not-acceptable", "payload-too-big")``; ``feature`` for
    ``<unsupported feature='...'/>`` (§7.1.3.4 and others); ``type`` where
    the XEP's example differs from RFC 6120's usual one (``<not-subscribed/>``
    is type cancel, §6.2.3.2)."""
    app = None
    if pubsub is not None:
        app = etree.Element(f"{{{NS_ERRORS}}}{pubsub}", nsmap=ns.default(NS_ERRORS))
        if feature is not None:
            app.set("feature", feature)
    return StanzaError(condition, text, type=type, app=app)


# -- node configuration (§8.2, §16.4.3 pubsub#node_config) -------------------

def _bool(v: str) -> str | None:
    return {"1": "1", "true": "1", "0": "0", "false": "0"}.get(v.strip().lower())


def _choice(*allowed: str) -> Callable[[str], str | None]:
    return lambda v: v if v in allowed else None


@dataclass(frozen=True)
class Limits:
    """A service's limits ([host.options.pubsub])."""

    max_items: int = 100            # the highest pubsub#max_items a node may set
    max_nodes: int = 1000           # nodes per service
    max_payload: int = 65536        # bytes of one item's payload
    max_subscriptions_per_node: int = 1000  # subscribed JIDs of one node
    max_subscriptions_per_jid: int = 10     # of them with one bare JID (itself, full JIDs)
    # The XEP-0163 (PEP) profile of an account's virtual service: the
    # "presence" access model (its default), pubsub#max_items 1 and
    # pubsub#send_last_published_item on_sub_and_presence by default
    # (XEP-0163 §5, §4.3.4; as Prosody's mod_pep).
    pep: bool = False


# Option -> (default, normalizer returning None when the value is invalid).
def options(limits: Limits) -> dict[str, tuple[str, Callable[[str], str | None]]]:
    def max_items(v: str) -> str | None:
        v = v.strip()
        if v == "max":
            return v            # kept as is: resolved when used (:func:`max_items`)
        return v if v.isdigit() and 1 <= int(v) <= limits.max_items else None

    out = {
        "pubsub#title": ("", lambda v: v),
        # Leaf nodes only (collections, XEP-0248, are not served).
        "pubsub#node_type": ("leaf", _choice("leaf")),
        "pubsub#max_items": (str(min(1 if limits.pep else 10, limits.max_items)), max_items),
        "pubsub#persist_items": ("1", _bool),
        "pubsub#access_model": (("presence", _choice(*PEP_ACCESS)) if limits.pep
                                else ("open", _choice(*SERVICE_ACCESS))),
        "pubsub#publish_model": ("publishers", _choice(*publish_models(limits))),
        "pubsub#notify_retract": ("1", _bool),
        "pubsub#notify_delete": ("1", _bool),
        "pubsub#deliver_payloads": ("1", _bool),
    }
    if limits.pep:
        out["pubsub#send_last_published_item"] = ("on_sub_and_presence", _choice(*SEND_LAST))
    return out


def max_items(config: Mapping[str, str], limits: Limits) -> int:
    """The number of items ``config`` keeps: its pubsub#max_items, where
    ``max`` (XEP-0060 §16.4.3) is the service's limit *now*: stored as
    ``max``, a node follows the operator's [host.options.*] max_items, and a
    later publish with ``max`` still meets the node's configuration. A
    number above a limit lowered since is the limit."""
    value = config.get("pubsub#max_items", "10")
    try:
        return min(max(1, int(value)), limits.max_items)
    except ValueError:              # "max"
        return limits.max_items


def publish_models(limits: Limits) -> tuple[str, ...]:
    """The publish models a node may have; PEP: "publishers" only (XEP-0163
    §1.2, §2.2: one publisher per node, the account, its owner)."""
    return ("publishers",) if limits.pep else ("publishers", "subscribers", "open")


def affiliation(value: str | None, limits: Limits) -> str | None:
    """An owner's affiliation for a JID (§8.9.2), checked: None (no
    change) if absent; <bad-request/> if unknown; on a PEP service
    "publisher" and "publish-only" are <feature-not-implemented/> +
    <unsupported feature='publisher-affiliation'/> ('publish-only-affiliation'):
    nobody but the account publishes (XEP-0163 §2.2)."""
    if value is None:
        return None
    if value not in AFFILIATIONS:
        raise StanzaError("bad-request", f"unknown affiliation {value!r}")
    if limits.pep and value in ("publisher", "publish-only"):
        raise error("feature-not-implemented", "unsupported", feature=f"{value}-affiliation",
                    text="only the account publishes to its PEP nodes")
    return value


SERVICE_ACCESS = ("open", "whitelist")
PEP_ACCESS = ("open", "presence", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")


def default_config(limits: Limits) -> dict[str, str]:
    return {k: d for k, (d, _) in options(limits).items()}


def parse_config(form: Element | None, limits: Limits,
                 base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The node configuration a ``<x xmlns='jabber:x:data' type='submit'/>``
    asks for, on top of ``base`` (the defaults when None). An unknown option
    or an invalid value is ``<not-acceptable/>`` (§8.2.5.4); a form that is
    not a node_config submission is ``<bad-request/>``."""
    config = dict(base) if base is not None else default_config(limits)
    if form is None:
        return config
    if form.tag != f"{{{DATA}}}x" or form.get("type") not in ("submit", "cancel"):
        raise error("bad-request", text="the configuration must be a submitted data form")
    if form.get("type") == "cancel":
        return config
    known = options(limits)
    for field in form.findall(f"{{{DATA}}}field"):
        var = field.get("var")
        values = [v.text or "" for v in field.findall(f"{{{DATA}}}value")]
        if var == "FORM_TYPE":
            if values != [NODE_CONFIG]:
                raise error("bad-request", text=f"FORM_TYPE must be {NODE_CONFIG}")
            continue
        if var not in known:
            raise error("not-acceptable", text=f"unsupported node option {var!r}")
        value = known[var][1](values[0] if values else "")
        if value is None:
            raise error("not-acceptable", text=f"invalid value for {var}: {values!r}")
        config[var] = value
    return config


def publish_options(form: Element | None, limits: Limits) -> dict[str, str]:
    """The options a publish-options form (§7.1.5) asks for, normalized:
    what a node auto-created by the publish gets on top of the defaults
    (XEP-0223) and what an existing node must already have. An option this
    service does not know, or an invalid value, is ``<conflict/>`` +
    ``<precondition-not-met/>`` (never silently ignored: a client asking for
    a whitelist node must not publish to an open one); a form that is not a
    submission is ``<bad-request/>``."""
    if form is None:
        return {}
    if form.tag != f"{{{DATA}}}x" or form.get("type") != "submit":
        raise error("bad-request", text="publish-options must be a submitted data form")
    known = options(limits)
    out: dict[str, str] = {}
    for field in form.findall(f"{{{DATA}}}field"):
        var = field.get("var") or ""
        values = [v.text or "" for v in field.findall(f"{{{DATA}}}value")]
        if var == "FORM_TYPE":
            if values not in ([f"{NS}#publish-options"], [NODE_CONFIG]):
                raise error("bad-request", text=f"FORM_TYPE must be {NS}#publish-options")
            continue
        if var not in known:
            raise error("conflict", "precondition-not-met", text=f"unsupported option {var!r}")
        wanted = known[var][1](values[0] if values else "")
        if wanted is None:
            raise error("conflict", "precondition-not-met",
                        text=f"invalid value for {var}: {values!r}")
        out[var] = wanted
    return out


def preconditions(form: Element | None, config: Mapping[str, str],
                  limits: Limits) -> StanzaError | None:
    """None if the node's ``config`` meets every option of a publish-options
    form (§7.1.5, taken as preconditions), else the error:
    :func:`publish_options`'s, or ``<conflict/>`` + ``<precondition-not-met/>``
    for a value other than the node's."""
    try:
        wanted = publish_options(form, limits)
    except StanzaError as exc:
        return exc
    defaults = options(limits)
    for var, value in wanted.items():
        have = config.get(var, defaults[var][0])
        if var == "pubsub#max_items" and "max" in (value, have):
            # "max" and the limit's number are the same precondition (a node
            # created with "max" before it was kept literally holds the number).
            if max_items({var: value}, limits) == max_items({var: have}, limits):
                continue
        if value != have:
            return error("conflict", "precondition-not-met",
                         text=f"{var} of the node is {config.get(var, defaults[var][0])!r}")
    return None


def config_form(config: Mapping[str, str], limits: Limits) -> Element:
    """The node configuration as a ``type='form'`` data form (§8.2.1)."""
    x = etree.Element(f"{{{DATA}}}x", nsmap=ns.default(DATA))
    x.set("type", "form")
    _field(x, "FORM_TYPE", NODE_CONFIG, type="hidden")
    for var in options(limits):
        lists = _lists(limits)
        kind = "boolean" if var in _BOOLEANS else "list-single" if var in lists else (
            "text-single")
        f = _field(x, var, config.get(var, ""), type=kind)
        for opt in lists.get(var, ()):
            o = etree.SubElement(f, f"{{{DATA}}}option")
            etree.SubElement(o, f"{{{DATA}}}value").text = opt
    return x


_BOOLEANS = frozenset(("pubsub#persist_items", "pubsub#notify_retract", "pubsub#notify_delete",
                       "pubsub#deliver_payloads"))


def _lists(limits: Limits) -> dict[str, tuple[str, ...]]:
    """The options of each list-single field."""
    out: dict[str, tuple[str, ...]] = {
        "pubsub#access_model": PEP_ACCESS if limits.pep else SERVICE_ACCESS,
        "pubsub#publish_model": publish_models(limits)}
    if limits.pep:
        out["pubsub#send_last_published_item"] = SEND_LAST
    return out


def _field(x: Element, var: str, value: str, type: str) -> Element:
    f: Element = etree.SubElement(x, f"{{{DATA}}}field")
    f.set("var", var)
    f.set("type", type)
    etree.SubElement(f, f"{{{DATA}}}value").text = value
    return f


META_DATA = f"{NS}#meta_data"


def meta_data(config: Mapping[str, str], owner: str, created: str) -> Element:
    """The ``pubsub#meta_data`` form (§5.4) of a node's disco#info: its
    creator and creation time (``created``, XEP-0082), owner, title,
    access model and item limit."""
    x = etree.Element(f"{{{DATA}}}x", nsmap=ns.default(DATA))
    x.set("type", "result")
    _field(x, "FORM_TYPE", META_DATA, type="hidden")
    _field(x, "pubsub#creator", owner, type="jid-single")
    _field(x, "pubsub#creation_date", created, type="text-single")
    _field(x, "pubsub#owner", owner, type="jid-multi")
    _field(x, "pubsub#title", config.get("pubsub#title", ""), type="text-single")
    _field(x, "pubsub#access_model", config.get("pubsub#access_model", "open"),
           type="text-single")
    _field(x, "pubsub#max_items", config.get("pubsub#max_items", ""), type="text-single")
    return x


# -- who may do what (§4.1) ----------------------------------------------------

def _access(affiliation: str, config: Mapping[str, str], presence: bool) -> StanzaError | None:
    """The access model's answer (§4.5) for an entity that is neither
    outcast nor publish-only: owners, publishers and members pass every
    model; a whitelist node refuses the others with <not-allowed/> +
    <closed-node/> (§6.1.3.5), a presence node (XEP-0163) those without a
    presence subscription to its owner (``presence``: the owner's roster
    has them as "from" or "both") with <not-authorized/> +
    <presence-subscription-required/> (§6.1.3.2, §6.5.9.4)."""
    if affiliation in ("owner", "publisher", "member"):
        return None
    model = config.get("pubsub#access_model", "open")
    if model == "whitelist":
        return error("not-allowed", "closed-node", text="this node is whitelist-only")
    if model == "presence" and not presence:
        return error("not-authorized", "presence-subscription-required",
                     text="this node is for those subscribed to its owner's presence")
    return None


def may_subscribe(affiliation: str, config: Mapping[str, str],
                  presence: bool = False) -> StanzaError | None:
    """None if the entity may subscribe, else the error (§6.1.3);
    ``presence``: it is subscribed to the owner's presence (XEP-0163)."""
    if affiliation == "outcast":
        return error("forbidden", text="you are banned from this node")
    if affiliation == "publish-only":
        return error("forbidden", text="a publish-only entity cannot subscribe")
    return _access(affiliation, config, presence)


def may_retrieve(affiliation: str, config: Mapping[str, str],
                 presence: bool = False) -> StanzaError | None:
    """None if the entity may retrieve items, else the error (§6.5.9)."""
    if affiliation in ("outcast", "publish-only"):
        return error("forbidden", text="you may not retrieve items of this node")
    return _access(affiliation, config, presence)


def may_publish(affiliation: str, config: Mapping[str, str], subscribed: bool) -> bool:
    """§7.1.3.1: the publish model decides beyond owners and publishers."""
    if affiliation in ("owner", "publisher", "publish-only"):
        return True
    if affiliation == "outcast":
        return False
    model = config.get("pubsub#publish_model", "publishers")
    return model == "open" or (model == "subscribers" and (subscribed or affiliation == "member"))


def may_retract(affiliation: str, own_item: bool) -> bool:
    """§7.2.3.1: owners and publishers retract any item, publish-only their own."""
    return affiliation in ("owner", "publisher") or (affiliation == "publish-only" and own_item)


def is_owner(affiliation: str) -> bool:
    return affiliation == "owner"


def may_discover(affiliation: str, config: Mapping[str, str], presence: bool = False) -> bool:
    """§5.2 (disco#items on the service): an open node is listed to anyone, a
    whitelist node (§4.5) only to those on its list, i.e. with an
    affiliation that lets them subscribe or publish (owner, publisher,
    publish-only, member); to anyone else it does not exist. A presence
    node (XEP-0163) is listed to those on its list and to the owner's
    presence subscribers (``presence``)."""
    model = config.get("pubsub#access_model", "open")
    if model == "open" or (model == "presence" and presence):
        return True
    return affiliation in ("owner", "publisher", "publish-only", "member")


def _bare(jid: str) -> str:
    """The bare part of a prepared JID (its resource starts at the first '/')."""
    return jid.partition("/")[0]


def subscriber(action: Element, requester: JID) -> str:
    """The 'jid' of a (un)subscribe request (prepared): the requester's bare
    or full JID. Missing: <bad-request/> + <jid-required/>; not a JID:
    <bad-request/> + <invalid-jid/>; someone else's: to subscribe,
    <bad-request/> + <invalid-jid/> (§6.1.3.1), to unsubscribe,
    <forbidden/> (§6.2.3.3)."""
    text = action.get("jid")
    if not text:
        raise error("bad-request", "jid-required", text="a 'jid' attribute is required")
    try:
        jid = JID.parse(text)
    except JIDError:
        raise error("bad-request", "invalid-jid", text="'jid' is not a JID") from None
    if jid.bare != requester.bare:
        if etree.QName(action).localname == "unsubscribe":
            raise StanzaError("forbidden", "you can only unsubscribe your own JID")
        raise error("bad-request", "invalid-jid", text="you can only subscribe your own JID")
    return str(jid)


def owner_may_subscribe(owner: str, jid: str, subscriptions: Mapping[str, str]) -> bool:
    """§8.8.2 (modify subscriptions) as served here: an owner (bare JID) may
    set 'subscribed' only for a JID of his own bare JID, or for a JID that
    is subscribed already (nothing changes). Anyone else subscribes
    themselves (§6.1), which is their consent: an owner cannot make the
    service send notifications to someone who did not ask for them (the
    XEP defines no approval flow for the subscribed entity)."""
    return jid in subscriptions or _bare(jid) == owner


def subscription_changes(subscriptions: Element) -> list[tuple[str, str]]:
    """(prepared JID, 'subscribed' or 'none') of each ``<subscription/>`` of an
    owner's ``<subscriptions/>`` set (§8.8.2), in order; one without
    'subscription' changes nothing (§8.8.2.1). A JID that does not parse is
    ``<jid-malformed/>``, another state ``<bad-request/>``: nothing of the
    request is applied."""
    out = []
    for s in subscriptions.findall(f"{{{NS_OWNER}}}subscription"):
        try:
            jid = str(JID.parse(s.get("jid", "")))
        except JIDError:
            raise StanzaError("jid-malformed", f"bad jid {s.get('jid')!r}") from None
        state = s.get("subscription")
        if state is None:
            continue
        if state not in ("subscribed", "none"):
            raise StanzaError("bad-request", f"subscription {state!r} is not supported")
        out.append((jid, state))
    return out


def refuse_subscriptions(subscriptions: Element, refused: list[str],
                         current: Mapping[str, str]) -> StanzaError:
    """§8.8.2.4: ``<not-acceptable/>`` "with the invalid entries, where the
    subscription returned is the original, un-altered subscription". The
    error reply echoes the request's payload (RFC 6120 §8.3.1,
    :func:`vinespy.xml.error_reply`), so the request's ``<subscriptions/>``
    is trimmed to those entries, each with its state in ``current``."""
    for old in list(subscriptions):
        subscriptions.remove(old)
    for jid in dict.fromkeys(refused):
        s = etree.SubElement(subscriptions, f"{{{NS_OWNER}}}subscription")
        s.set("jid", jid)
        s.set("subscription", "subscribed" if jid in current else "none")
    return StanzaError("not-acceptable", "an owner subscribes only JIDs of his own; others "
                       "subscribe themselves (XEP-0060 §6.1), within the node's limits")


def too_many_subscriptions(jid: str, subscriptions: Mapping[str, str],
                           limits: Limits) -> StanzaError | None:
    """None if ``jid`` (a prepared bare or full JID) may be subscribed to a
    node whose subscriptions are ``subscriptions``, else the error of
    §6.1.3.9 (Too Many Subscriptions): the node has
    ``max_subscriptions_per_node``, or ``max_subscriptions_per_jid`` of them
    belong to ``jid``'s bare JID ("the service can match on bare JID or full
    JID"). A JID already subscribed takes no new subscription.

    The error is ``<not-allowed/>`` + ``<too-many-subscriptions/>``: the
    pubsub condition is the XEP's, the stanza condition is not its
    ``<policy-violation/>`` (type wait), which older clients cannot parse
    (slixmpp 1.x raises on it and its request never completes; see also
    :func:`vinespy.rules.roster.admit`), while ``<not-allowed/>`` (RFC 6120
    §8.3.3.11, type cancel) is understood everywhere, says that retrying as
    is will not help, and is what ejabberd answers at its
    ``max_subscriptions_node``."""
    if jid in subscriptions:
        return None
    if len(subscriptions) >= limits.max_subscriptions_per_node:
        return error("not-allowed", "too-many-subscriptions",
                     text=f"this node has {limits.max_subscriptions_per_node} subscriptions, "
                          "the most allowed here")
    bare = _bare(jid)
    if sum(1 for j in subscriptions if _bare(j) == bare) >= limits.max_subscriptions_per_jid:
        return error("not-allowed", "too-many-subscriptions",
                     text=f"{bare} has {limits.max_subscriptions_per_jid} subscriptions to "
                          "this node (its bare and full JIDs), the most allowed here")
    return None


# -- notifications (§7.1.2, §7.2.2.1, §8.4.3) -----------------------------------

def _event(node: str) -> tuple[Element, Element]:
    event = etree.Element(f"{{{NS_EVENT}}}event", nsmap=ns.default(NS_EVENT))
    items = etree.SubElement(event, f"{{{NS_EVENT}}}items")
    items.set("node", node)
    return event, items


def published(node: str, item_id: str, payload: Element | None) -> Element:
    """``<event><items node=…><item id=…>payload</item></items></event>``;
    ``payload`` None when the node does not deliver payloads."""
    event, items = _event(node)
    item = etree.SubElement(items, f"{{{NS_EVENT}}}item")
    item.set("id", item_id)
    if payload is not None:
        item.append(payload)
    return event


def retracted(node: str, item_ids: list[str]) -> Element:
    event, items = _event(node)
    for i in item_ids:
        etree.SubElement(items, f"{{{NS_EVENT}}}retract").set("id", i)
    return event


def deleted(node: str) -> Element:
    event = etree.Element(f"{{{NS_EVENT}}}event", nsmap=ns.default(NS_EVENT))
    etree.SubElement(event, f"{{{NS_EVENT}}}delete").set("node", node)
    return event


def purged(node: str) -> Element:
    """§8.5.2: one ``<purge node=…/>`` per subscriber, not one retract per item."""
    event = etree.Element(f"{{{NS_EVENT}}}event", nsmap=ns.default(NS_EVENT))
    etree.SubElement(event, f"{{{NS_EVENT}}}purge").set("node", node)
    return event


# The feature (§16.2, pubsub#errors ``<unsupported feature=…/>``) an action
# element stands for, where its name is not the feature's.
_ACTION_FEATURES = {
    "options": "subscription-options",      # §6.3
    "default": "retrieve-default",          # §6.4 (entity), §8.3 (owner)
    "configure": "config-node",             # §8.2
    "create": "create-nodes",
    "delete": "delete-nodes",
    "purge": "purge-nodes",
    "retract": "retract-items",
    "items": "retrieve-items",
    "subscriptions": "retrieve-subscriptions",
    "affiliations": "retrieve-affiliations",
}


def unsupported(action: str) -> StanzaError:
    """``<feature-not-implemented/>`` + ``<unsupported feature=…/>`` for an
    action element this service does not handle (§6.3.3 and others)."""
    feature = _ACTION_FEATURES.get(action, action)
    return error("feature-not-implemented", "unsupported", feature=feature,
                 text=f"<{action}/> is not supported here")
