"""XEP-0060 rules without I/O (vinespy/rules/pubsub.py)."""

from __future__ import annotations

import pytest
from lxml import etree

from vinespy.rules import pubsub
from vinespy.errors import StanzaError
from vinespy.rules.pubsub import DATA, NODE_CONFIG, NS_ERRORS, NS_EVENT, Limits

LIMITS = Limits(max_items=50)


def form(**fields: str) -> etree._Element:
    x = etree.Element(f"{{{DATA}}}x", type="submit")
    for var, value in {"FORM_TYPE": NODE_CONFIG, **fields}.items():
        f = etree.SubElement(x, f"{{{DATA}}}field", var=var.replace("__", "#"))
        etree.SubElement(f, f"{{{DATA}}}value").text = value
    return x


def conditions(err: StanzaError) -> tuple[str, str | None]:
    el = err.element()
    app = el.find(f"{{{NS_ERRORS}}}*")
    return err.condition, etree.QName(app).localname if app is not None else None


def test_error_carries_the_pubsub_condition() -> None:
    err = pubsub.error("feature-not-implemented", "unsupported", feature="purge-nodes")
    el = err.element()
    app = el.find(f"{{{NS_ERRORS}}}unsupported")
    assert app is not None and app.get("feature") == "purge-nodes"
    assert el.get("type") == "cancel"
    assert conditions(pubsub.error("not-acceptable", "payload-too-big")) == (
        "not-acceptable", "payload-too-big")


def test_error_type_defaults_to_rfc6120_and_can_follow_the_xep() -> None:
    assert pubsub.error("unexpected-request", "not-subscribed").element().get("type") == "wait"
    err = pubsub.error("unexpected-request", "not-subscribed", type="cancel")
    assert err.element().get("type") == "cancel"
    assert conditions(err) == ("unexpected-request", "not-subscribed")


@pytest.mark.parametrize("action, feature", [
    ("options", "subscription-options"), ("default", "retrieve-default"),
    ("purge", "purge-nodes"), ("collection", "collection"),
])
def test_unsupported_names_the_feature(action: str, feature: str) -> None:
    err = pubsub.unsupported(action)
    assert conditions(err) == ("feature-not-implemented", "unsupported")
    assert err.element().find(f"{{{NS_ERRORS}}}unsupported").get("feature") == feature


def test_defaults_and_a_valid_form() -> None:
    assert pubsub.default_config(LIMITS)["pubsub#access_model"] == "open"
    c = pubsub.parse_config(form(pubsub__max_items="20", pubsub__access_model="whitelist",
                                 pubsub__deliver_payloads="false"), LIMITS)
    assert (c["pubsub#max_items"], c["pubsub#access_model"], c["pubsub#deliver_payloads"]) == (
        "20", "whitelist", "0")
    assert pubsub.parse_config(form(pubsub__max_items="max"), LIMITS)["pubsub#max_items"] == "max"
    assert pubsub.parse_config(form(pubsub__node_type="leaf"), LIMITS)["pubsub#node_type"] == "leaf"
    base = {**pubsub.default_config(LIMITS), "pubsub#title": "kept"}
    assert pubsub.parse_config(form(pubsub__notify_retract="0"), LIMITS, base)["pubsub#title"] \
        == "kept"


@pytest.mark.parametrize("fields, cond", [
    ({"pubsub__max_items": "51"}, "not-acceptable"),
    ({"pubsub__max_items": "0"}, "not-acceptable"),
    ({"pubsub__max_items": "ten"}, "not-acceptable"),
    ({"pubsub__access_model": "roster"}, "not-acceptable"),
    ({"pubsub__publish_model": "everyone"}, "not-acceptable"),
    ({"pubsub__persist_items": "maybe"}, "not-acceptable"),
    ({"pubsub__bogus": "1"}, "not-acceptable"),
    ({"pubsub__node_type": "collection"}, "not-acceptable"),
    ({"FORM_TYPE": "urn:other"}, "bad-request"),
])
def test_invalid_forms(fields: dict[str, str], cond: str) -> None:
    with pytest.raises(StanzaError) as exc:
        pubsub.parse_config(form(**fields), LIMITS)
    assert exc.value.condition == cond


def test_not_a_submitted_form_is_bad_request() -> None:
    with pytest.raises(StanzaError) as exc:
        pubsub.parse_config(etree.Element(f"{{{DATA}}}x", type="form"), LIMITS)
    assert exc.value.condition == "bad-request"


def test_config_form_round_trips() -> None:
    c = {**pubsub.default_config(LIMITS), "pubsub#max_items": "7"}
    x = pubsub.config_form(c, LIMITS)
    assert x.get("type") == "form"
    x.set("type", "submit")
    assert pubsub.parse_config(x, LIMITS) == c


def test_publish_options_are_preconditions() -> None:
    config = {**pubsub.default_config(LIMITS), "pubsub#max_items": "50"}
    assert pubsub.preconditions(None, config, LIMITS) is None
    ok = form(pubsub__access_model="open", pubsub__max_items="max",
              pubsub__persist_items="true")
    ok[0][0].text = f"{pubsub.NS}#publish-options"
    assert pubsub.preconditions(ok, config, LIMITS) is None
    for fields in ({"pubsub__access_model": "whitelist"}, {"pubsub__max_items": "5"},
                   {"pubsub__access_model": "roster"}, {"pubsub__bogus": "1"}):
        err = pubsub.preconditions(form(**fields), config, LIMITS)
        assert err is not None and conditions(err) == ("conflict", "precondition-not-met")
    err = pubsub.preconditions(form(FORM_TYPE="urn:other"), config, LIMITS)
    assert err is not None and err.condition == "bad-request"


def test_max_items_max_follows_the_limit() -> None:
    """pubsub#max_items 'max' is kept as 'max' and resolved when used: after
    the operator changes the limit, the node keeps the new limit's items and
    a publish with max_items=max still meets its configuration."""
    config = pubsub.parse_config(form(pubsub__max_items="max"), LIMITS)
    assert pubsub.max_items(config, LIMITS) == 50
    lower = Limits(max_items=20)
    assert pubsub.max_items(config, lower) == 20
    ask = form(pubsub__max_items="max")
    ask[0][0].text = f"{pubsub.NS}#publish-options"
    assert pubsub.preconditions(ask, config, lower) is None
    # A node created with 'max' before it was kept literally holds the number.
    assert pubsub.preconditions(ask, {**config, "pubsub#max_items": "20"}, lower) is None
    err = pubsub.preconditions(ask, {**config, "pubsub#max_items": "7"}, lower)
    assert err is not None and conditions(err) == ("conflict", "precondition-not-met")
    assert pubsub.max_items({"pubsub#max_items": "7"}, lower) == 7


OPEN = {"pubsub#access_model": "open", "pubsub#publish_model": "publishers"}
WHITE = {"pubsub#access_model": "whitelist", "pubsub#publish_model": "publishers"}


@pytest.mark.parametrize("aff, config, expect", [
    ("owner", WHITE, None), ("member", WHITE, None), ("publisher", WHITE, None),
    ("none", OPEN, None), ("none", WHITE, ("not-allowed", "closed-node")),
    ("outcast", OPEN, ("forbidden", None)), ("publish-only", OPEN, ("forbidden", None)),
])
def test_may_subscribe_and_retrieve(aff: str, config: dict[str, str],
                                    expect: tuple[str, str | None] | None) -> None:
    for rule in (pubsub.may_subscribe, pubsub.may_retrieve):
        err = rule(aff, config)
        assert (conditions(err) if err is not None else None) == expect


@pytest.mark.parametrize("aff, model, subscribed, expect", [
    ("owner", "publishers", False, True), ("publisher", "publishers", False, True),
    ("publish-only", "publishers", False, True), ("member", "publishers", True, False),
    ("none", "publishers", True, False), ("none", "subscribers", True, True),
    ("none", "subscribers", False, False), ("member", "subscribers", False, True),
    ("none", "open", False, True), ("outcast", "open", True, False),
])
def test_may_publish(aff: str, model: str, subscribed: bool, expect: bool) -> None:
    assert pubsub.may_publish(aff, {"pubsub#publish_model": model}, subscribed) is expect


def test_may_retract() -> None:
    assert pubsub.may_retract("owner", False) and pubsub.may_retract("publisher", False)
    assert pubsub.may_retract("publish-only", True)
    assert not pubsub.may_retract("publish-only", False)
    assert not pubsub.may_retract("member", True) and not pubsub.may_retract("none", True)


@pytest.mark.parametrize("aff, config, listed", [
    ("none", OPEN, True), ("outcast", OPEN, True), ("none", {}, True),
    ("none", WHITE, False), ("outcast", WHITE, False),
    ("owner", WHITE, True), ("publisher", WHITE, True), ("publish-only", WHITE, True),
    ("member", WHITE, True),
])
def test_may_discover(aff: str, config: dict[str, str], listed: bool) -> None:
    """§5.2: a whitelist node is listed only to those on its list."""
    assert pubsub.may_discover(aff, config) is listed


def test_owner_may_subscribe_only_with_consent() -> None:
    """§8.8.2 as served: the owner's own JIDs, or a subscription that exists."""
    subs = {"carol@w.lit/x": "s1"}
    assert pubsub.owner_may_subscribe("alice@w.lit", "alice@w.lit", subs)
    assert pubsub.owner_may_subscribe("alice@w.lit", "alice@w.lit/made-up", subs)
    assert pubsub.owner_may_subscribe("alice@w.lit", "carol@w.lit/x", subs)
    assert not pubsub.owner_may_subscribe("alice@w.lit", "carol@w.lit", subs)
    assert not pubsub.owner_may_subscribe("alice@w.lit", "bob@w.lit", subs)
    assert not pubsub.owner_may_subscribe("alice@w.lit", "alice@w.lit.evil", subs)


def test_too_many_subscriptions() -> None:
    """§6.1.3.9: per node, and per bare JID (bare and full JIDs) on a node;
    a JID already subscribed takes no new one."""
    limits = Limits(max_subscriptions_per_node=4, max_subscriptions_per_jid=2)
    subs = {"bob@w.lit": "1", "bob@w.lit/a": "2", "carol@w.lit/a/b": "3"}
    assert pubsub.too_many_subscriptions("bob@w.lit/a", subs, limits) is None
    err = pubsub.too_many_subscriptions("bob@w.lit/b", subs, limits)
    assert err is not None and conditions(err) == ("not-allowed", "too-many-subscriptions")
    assert err.type == "cancel" and "bob@w.lit" in (err.text or "")
    assert pubsub.too_many_subscriptions("carol@w.lit", subs, limits) is None
    assert pubsub.too_many_subscriptions("dave@w.lit", subs, limits) is None
    subs["dave@w.lit"] = "4"
    err = pubsub.too_many_subscriptions("erin@w.lit", subs, limits)
    assert err is not None and conditions(err) == ("not-allowed", "too-many-subscriptions")
    assert pubsub.too_many_subscriptions("dave@w.lit", subs, limits) is None
    assert Limits().max_subscriptions_per_node == 1000
    assert Limits().max_subscriptions_per_jid == 10


def test_notifications() -> None:
    payload = etree.Element("{urn:example}entry")
    ev = pubsub.published("news", "i1", payload)
    assert ev.tag == f"{{{NS_EVENT}}}event"
    item = ev.find(f"{{{NS_EVENT}}}items/{{{NS_EVENT}}}item")
    assert item is not None and item.get("id") == "i1" and item[0].tag == "{urn:example}entry"
    bare = pubsub.published("news", "i2", None)
    assert len(bare.find(f"{{{NS_EVENT}}}items/{{{NS_EVENT}}}item")) == 0
    r = pubsub.retracted("news", ["a", "b"])
    assert [e.get("id") for e in r.iter(f"{{{NS_EVENT}}}retract")] == ["a", "b"]
    d = pubsub.deleted("news")
    assert d.find(f"{{{NS_EVENT}}}delete").get("node") == "news"
    p = pubsub.purged("news")
    assert [(e.tag, e.get("node")) for e in p] == [(f"{{{NS_EVENT}}}purge", "news")]


def test_subscription_changes_and_refusal() -> None:
    """§8.8.2: entries read in order (no 'subscription': no change, §8.8.2.1);
    a bad JID or state refuses the whole request; §8.8.2.4: the refused
    entries, with their unchanged state, replace the request's children."""
    ns = pubsub.NS_OWNER
    subs = etree.Element(f"{{{ns}}}subscriptions", node="n")
    for jid, state in (("Bob@W.lit", "subscribed"), ("carol@w.lit/x", None),
                       ("dave@w.lit", "none"), ("erin@w.lit", "subscribed")):
        el = etree.SubElement(subs, f"{{{ns}}}subscription", jid=jid)
        if state is not None:
            el.set("subscription", state)
    assert pubsub.subscription_changes(subs) == [
        ("bob@w.lit", "subscribed"), ("dave@w.lit", "none"), ("erin@w.lit", "subscribed")]
    err = pubsub.refuse_subscriptions(subs, ["bob@w.lit", "erin@w.lit", "bob@w.lit"],
                                      {"erin@w.lit": "s"})
    assert err.condition == "not-acceptable" and err.type == "modify"
    assert [(e.get("jid"), e.get("subscription")) for e in subs] == [
        ("bob@w.lit", "none"), ("erin@w.lit", "subscribed")]
    for jid, state, cond in (("@bad", "none", "jid-malformed"),
                             ("bob@w.lit", "pending", "bad-request")):
        bad = etree.Element(f"{{{ns}}}subscriptions")
        etree.SubElement(bad, f"{{{ns}}}subscription", jid=jid, subscription=state)
        with pytest.raises(StanzaError) as exc:
            pubsub.subscription_changes(bad)
        assert exc.value.condition == cond


# -- XEP-0163 (PEP) profile ------------------------------------------------------

PEP = Limits(max_items=20, pep=True)


def test_pep_defaults() -> None:
    """PEP nodes: access model presence, max_items 1, the last item on
    subscription and presence (XEP-0163 §5, §4.3.4)."""
    d = pubsub.default_config(PEP)
    assert d["pubsub#access_model"] == "presence"
    assert d["pubsub#max_items"] == "1"
    assert d["pubsub#send_last_published_item"] == "on_sub_and_presence"
    assert "pubsub#send_last_published_item" not in pubsub.default_config(LIMITS)


def test_presence_access_model() -> None:
    """A presence node: owners/members always, others only with a presence
    subscription, else <not-authorized/> + <presence-subscription-required/>."""
    config = {"pubsub#access_model": "presence"}
    for rule in (pubsub.may_subscribe, pubsub.may_retrieve):
        assert rule("owner", config) is None
        assert rule("member", config) is None
        assert rule("none", config, True) is None
        err = rule("none", config)
        assert err is not None
        assert conditions(err) == ("not-authorized", "presence-subscription-required")
    assert pubsub.may_discover("none", config, True)
    assert not pubsub.may_discover("none", config)
    with pytest.raises(StanzaError):        # not a choice of an XEP-0060 service
        pubsub.parse_config(form(pubsub__access_model="presence"), LIMITS)


def test_publish_options_for_creation_and_as_preconditions() -> None:
    """XEP-0223's options are applied at creation; 'max' is the limit; on an
    existing node a different value or an unknown option is
    <conflict/> + <precondition-not-met/>."""
    opts = form(FORM_TYPE=f"{pubsub.NS}#publish-options", pubsub__persist_items="true",
                pubsub__access_model="whitelist", pubsub__max_items="max")
    assert pubsub.publish_options(opts, PEP) == {
        "pubsub#persist_items": "1", "pubsub#access_model": "whitelist",
        "pubsub#max_items": "max"}
    node = pubsub.default_config(PEP)
    err = pubsub.preconditions(opts, node, PEP)
    assert err is not None and conditions(err) == ("conflict", "precondition-not-met")
    assert pubsub.preconditions(form(pubsub__access_model="presence"), node, PEP) is None
    err = pubsub.preconditions(form(pubsub__no_such="1"), node, PEP)
    assert err is not None and conditions(err) == ("conflict", "precondition-not-met")
