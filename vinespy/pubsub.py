"""XEP-0060 (Publish-Subscribe) rules, without I/O.

What the pubsub module asks before it touches storage: who may do what on a
node (§4.1's affiliation table, under the node's access and publish models),
which node configuration is valid (§8.2, the ``pubsub#node_config`` data
form), what error each failure is (the pubsub-specific conditions of §7 and
§8 in ``http://jabber.org/protocol/pubsub#errors``), and what a notification
looks like (§7.1.2, §7.2.2.1, §8.4.3).

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

from . import ns
from .errors import StanzaError
from .xml import Element

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


# Option -> (default, normalizer returning None when the value is invalid).
def options(limits: Limits) -> dict[str, tuple[str, Callable[[str], str | None]]]:
    def max_items(v: str) -> str | None:
        v = v.strip()
        if v == "max":
            return str(limits.max_items)
        return v if v.isdigit() and 1 <= int(v) <= limits.max_items else None

    return {
        "pubsub#title": ("", lambda v: v),
        # Leaf nodes only (collections, XEP-0248, are not served).
        "pubsub#node_type": ("leaf", _choice("leaf")),
        "pubsub#max_items": (str(min(10, limits.max_items)), max_items),
        "pubsub#persist_items": ("1", _bool),
        "pubsub#access_model": ("open", _choice("open", "whitelist")),
        "pubsub#publish_model": ("publishers", _choice("publishers", "subscribers", "open")),
        "pubsub#notify_retract": ("1", _bool),
        "pubsub#notify_delete": ("1", _bool),
        "pubsub#deliver_payloads": ("1", _bool),
    }


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


def preconditions(form: Element | None, config: Mapping[str, str],
                  limits: Limits) -> StanzaError | None:
    """None if the node's ``config`` meets every option of a publish-options
    form (§7.1.5, taken as preconditions), else ``<conflict/>`` +
    ``<precondition-not-met/>``: an option this service does not know or a
    value other than the node's is never silently ignored (a client asking
    for a whitelist node must not publish to an open one). A form that is
    not a submission is ``<bad-request/>``."""
    if form is None:
        return None
    if form.tag != f"{{{DATA}}}x" or form.get("type") != "submit":
        return error("bad-request", text="publish-options must be a submitted data form")
    known = options(limits)
    for field in form.findall(f"{{{DATA}}}field"):
        var = field.get("var") or ""
        values = [v.text or "" for v in field.findall(f"{{{DATA}}}value")]
        if var == "FORM_TYPE":
            if values not in ([f"{NS}#publish-options"], [NODE_CONFIG]):
                return error("bad-request", text=f"FORM_TYPE must be {NS}#publish-options")
            continue
        if var not in known:
            return error("conflict", "precondition-not-met", text=f"unsupported option {var!r}")
        default, normalize = known[var]
        wanted = normalize(values[0] if values else "")
        if wanted is None or wanted != config.get(var, default):
            return error("conflict", "precondition-not-met",
                         text=f"{var} of the node is {config.get(var, default)!r}")
    return None


def config_form(config: Mapping[str, str], limits: Limits) -> Element:
    """The node configuration as a ``type='form'`` data form (§8.2.1)."""
    x = etree.Element(f"{{{DATA}}}x", nsmap=ns.default(DATA))
    x.set("type", "form")
    _field(x, "FORM_TYPE", NODE_CONFIG, type="hidden")
    for var in options(limits):
        kind = "boolean" if var in _BOOLEANS else "list-single" if var in _LISTS else (
            "text-single")
        f = _field(x, var, config.get(var, ""), type=kind)
        for opt in _LISTS.get(var, ()):
            o = etree.SubElement(f, f"{{{DATA}}}option")
            etree.SubElement(o, f"{{{DATA}}}value").text = opt
    return x


_BOOLEANS = frozenset(("pubsub#persist_items", "pubsub#notify_retract", "pubsub#notify_delete",
                       "pubsub#deliver_payloads"))
_LISTS = {"pubsub#access_model": ("open", "whitelist"),
          "pubsub#publish_model": ("publishers", "subscribers", "open")}


def _field(x: Element, var: str, value: str, type: str) -> Element:
    f: Element = etree.SubElement(x, f"{{{DATA}}}field")
    f.set("var", var)
    f.set("type", type)
    etree.SubElement(f, f"{{{DATA}}}value").text = value
    return f


# -- who may do what (§4.1) ----------------------------------------------------

def may_subscribe(affiliation: str, config: Mapping[str, str]) -> StanzaError | None:
    """None if the entity may subscribe, else the error (§6.1.3)."""
    if affiliation == "outcast":
        return error("forbidden", text="you are banned from this node")
    if affiliation == "publish-only":
        return error("forbidden", text="a publish-only entity cannot subscribe")
    if config.get("pubsub#access_model", "open") == "whitelist" and affiliation not in (
            "owner", "publisher", "member"):
        return error("not-allowed", "closed-node", text="this node is whitelist-only")
    return None


def may_retrieve(affiliation: str, config: Mapping[str, str]) -> StanzaError | None:
    """None if the entity may retrieve items, else the error (§6.5.9)."""
    if affiliation in ("outcast", "publish-only"):
        return error("forbidden", text="you may not retrieve items of this node")
    if config.get("pubsub#access_model", "open") == "whitelist" and affiliation not in (
            "owner", "publisher", "member"):
        return error("not-allowed", "closed-node", text="this node is whitelist-only")
    return None


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
