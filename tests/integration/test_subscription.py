"""RFC 6121 §3 presence subscriptions and §4 presence broadcast between local users,
end to end with real slixmpp clients (their roster plugin told not to answer
subscription requests on its own, so the test decides)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from tests.conftest import DOMAIN, TIMEOUT, Running
from tests.integration.test_roster import ROSTER, expect, is_push, items_of, raw_iq, stored
from vinespy.jid import JID
from vinespy.storage import Contact

pytestmark = pytest.mark.integration

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


def quiet(c: Any) -> Any:
    """No automatic answers to subscription requests: the test decides."""
    c.auto_authorize = None
    c.auto_subscribe = False
    return c


async def login(srv: Running, local: str, resource: str = "one", *,
                roster: bool = True, watch: Callable[[Any], Any] | None = None) -> Any:
    """``local`` (created on first use) logged in with initial presence, quiet from
    before it connects; with ``roster``, it requested the roster (gets pushes).
    ``watch`` is called with the client before it connects."""
    jid = f"{local}@{DOMAIN}"
    if await srv.storage.find_user(JID.parse(jid)) is None:
        await srv.user(local)
    make = srv.client

    def client(*a: Any, **kw: Any) -> Any:
        c = quiet(make(*a, **kw))
        if watch is not None:
            watch(c)
        return c
    setattr(srv, "client", client)
    try:
        c = await srv.login(f"{jid}/{resource}")
    finally:
        delattr(srv, "client")
    if roster:
        await c.get_roster(timeout=TIMEOUT)
    return c


def from_(jid: str) -> Callable[[Any], bool]:
    """Matches a stanza from ``jid`` (bare or any of its resources)."""
    return lambda st: st["from"].bare == jid


async def state(srv: Running, owner: str, contact: str) -> tuple[str, str | None, bool] | None:
    """(subscription, ask, pending_in) of ``owner``'s record for ``contact``, or None."""
    c = (await stored(srv, owner)).roster.get(JID.parse(contact))
    return None if c is None else (c.subscription, c.ask, c.pending_in)


async def subscribe(a: Any, b: Any) -> None:
    """``a`` asks ``b`` for its presence and ``b`` approves; both see the pushes."""
    frm, to = a.boundjid.bare, b.boundjid.bare
    request = expect(b, "presence_subscribe", from_(frm))
    asked = expect(a, "roster_update", is_push(to))
    a.send_presence(pto=to, ptype="subscribe")
    assert str((await request)["from"]) == frm        # stamped bare (§3.1.2)
    assert items_of(await asked)[to]["ask"] == "subscribe"
    approved = expect(a, "presence_subscribed", from_(to))
    a_push = expect(a, "roster_update", lambda iq: iq["type"] == "set" and
                    items_of(iq).get(to, {}).get("subscription") in ("to", "both"))
    b_push = expect(b, "roster_update", lambda iq: iq["type"] == "set" and
                    items_of(iq).get(frm, {}).get("subscription") in ("from", "both"))
    b.send_presence(pto=frm, ptype="subscribed")
    assert str((await approved)["from"]) == to
    await asyncio.gather(a_push, b_push)


# --- step 1: subscription stanzas (§3, Appendix A) --------------------------------


async def test_mutual_subscription(server: Running) -> None:
    """subscribe → subscribed both ways leaves both rosters at 'both', with pushes."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    presence = expect(a, "presence", available_from(BOB))
    await subscribe(a, b)
    assert str((await presence)["from"]) == f"{BOB}/one"    # §3.1.5
    assert await state(server, ALICE, BOB) == ("to", None, False)
    assert await state(server, BOB, ALICE) == ("from", None, False)
    seen_by_bob = expect(b, "presence", available_from(ALICE))
    await subscribe(b, a)
    assert str((await seen_by_bob)["from"]).startswith(f"{ALICE}/")   # both see each other
    assert await state(server, ALICE, BOB) == ("both", None, False)
    assert await state(server, BOB, ALICE) == ("both", None, False)


async def test_unsubscribe_and_unsubscribed(server: Running) -> None:
    """unsubscribe and unsubscribed reach the contact and take 'both' down to 'none'."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    await subscribe(a, b)
    await subscribe(b, a)
    got = expect(b, "presence_unsubscribe", from_(ALICE))
    pushed = expect(b, "roster_update", lambda iq: iq["type"] == "set" and
                    items_of(iq).get(ALICE, {}).get("subscription") == "to")
    offline = expect(a, "presence_unavailable", from_(BOB))                  # §3.3.3
    a.send_presence(pto=BOB, ptype="unsubscribe")
    await asyncio.gather(got, pushed, offline)
    assert await state(server, ALICE, BOB) == ("from", None, False)
    assert await state(server, BOB, ALICE) == ("to", None, False)
    got = expect(b, "presence_unsubscribed", from_(ALICE))
    pushed = expect(a, "roster_update", lambda iq: iq["type"] == "set" and
                    items_of(iq).get(BOB, {}).get("subscription") == "none")
    offline = expect(b, "presence_unavailable", from_(ALICE))                # §3.2.2
    a.send_presence(pto=BOB, ptype="unsubscribed")
    await asyncio.gather(got, pushed, offline)
    assert await state(server, ALICE, BOB) == ("none", None, False)
    assert await state(server, BOB, ALICE) == ("none", None, False)


async def test_denied_request(server: Running) -> None:
    """A request answered with unsubscribed clears the asker's pending 'ask'."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    request = expect(b, "presence_subscribe", from_(ALICE))
    a.send_presence(pto=BOB, ptype="subscribe")
    await request
    assert await state(server, BOB, ALICE) == ("none", None, True)
    denied = expect(a, "presence_unsubscribed", from_(BOB))
    b.send_presence(pto=ALICE, ptype="unsubscribed")
    await denied
    assert await state(server, ALICE, BOB) == ("none", None, False)
    assert await state(server, BOB, ALICE) is None


async def test_preapproved_request_answered_by_server(server: Running) -> None:
    """A pre-approved request is answered by the server, not delivered (§3.4)."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    pushed = expect(a, "roster_update", is_push(BOB))
    a.send_presence(pto=BOB, ptype="subscribed")
    assert items_of(await pushed)[BOB]["approved"]
    requests: list[Any] = []
    a.add_event_handler("presence_subscribe", requests.append)
    approved = expect(b, "presence_subscribed", from_(ALICE))
    presence = expect(b, "presence", available_from(ALICE))
    b.send_presence(pto=ALICE, ptype="subscribe")
    await asyncio.gather(approved, presence)
    await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    assert requests == []
    assert await state(server, ALICE, BOB) == ("from", None, False)
    assert await state(server, BOB, ALICE) == ("to", None, False)


REMOVE_BOB = f"<query xmlns='{ROSTER}'><item jid='{BOB}' subscription='remove'/></query>"


@pytest.mark.parametrize("kind, sent", [
    ("both", [(f"{ALICE}/one", "unavailable"), (f"{ALICE}/two", "unavailable"),
              (ALICE, "unsubscribed"), (ALICE, "unsubscribe")]),
    ("from", [(f"{ALICE}/one", "unavailable"), (f"{ALICE}/two", "unavailable"),
              (ALICE, "unsubscribed")]),
    ("to", [(ALICE, "unsubscribe")]),
])
async def test_roster_removal_cancels_like_the_users_own_stanzas(
        server: Running, kind: str, sent: list[tuple[str, str]]) -> None:
    """alice (two resources) removes bob (§2.5.2): where bob had her presence
    (from/both) he gets unavailable from each of her resources before
    unsubscribed (§3.2.2), and unsubscribe where she had his (to/both), which
    brings her resources his unavailable (§3.3.3); nothing else."""
    one = await login(server, "alice", "one")
    two = await login(server, "alice", "two")
    b = await login(server, "bob")
    if kind in ("to", "both"):
        await subscribe(one, b)
    if kind in ("from", "both"):
        online = [expect(b, "presence", lambda p, r=r: str(p["from"]) == r and
                         available_from(ALICE)(p)) for r in (f"{ALICE}/one", f"{ALICE}/two")]
        await subscribe(b, one)
        await asyncio.gather(*online)
    got: list[tuple[str, str]] = []
    b.add_event_handler("presence", lambda p: got.append((str(p["from"]), p["type"]))
                        if p["from"].bare == ALICE else None)
    marker = expect(b, "message", from_(ALICE))
    bob_gone = [expect(c, "presence_unavailable", from_(BOB)) for c in (one, two)
                if kind in ("to", "both")]
    # A raw set: slixmpp's del_roster_item would send the presences itself.
    await raw_iq(one, "set", REMOVE_BOB)
    # What the removal sends is routed before the set is answered, and one
    # recipient's stanzas arrive in order: all of it is in once this is.
    one.send_message(mto=BOB, mbody="after the removal")
    await marker
    await asyncio.gather(*bob_gone)
    unavailable = sorted(x for x in got if x[1] == "unavailable")
    assert unavailable + [x for x in got if x[1] != "unavailable"] == sent
    assert got[:len(unavailable)] == [x for x in got if x[1] == "unavailable"]   # §3.2.2: first
    assert await state(server, ALICE, BOB) is None
    assert await state(server, BOB, ALICE) == ("none", None, False)     # still his item


# --- step 2: requests to offline users (§3.1.3) -----------------------------------


async def test_request_to_offline_user_delivered_at_login(server: Running) -> None:
    """A request to a user with no available resource reaches them when they log in."""
    await server.user("bob")
    a = await login(server, "alice")
    asked = expect(a, "roster_update", is_push(BOB))
    a.send_presence(pto=BOB, ptype="subscribe")
    await asked
    # The server handles a stream's stanzas in order: once the ping is answered,
    # the request has reached bob's side.
    await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    assert await state(server, BOB, ALICE) == ("none", None, True)
    b = quiet(server.client(f"{BOB}/one"))
    request = expect(b, "presence_subscribe", from_(ALICE))
    b.add_event_handler("session_start", lambda _: b.send_presence())
    b.connect("127.0.0.1", server.server.ports["client"])
    assert str((await request)["from"]) == ALICE


# --- step 3: presence broadcast and probes (§4.2-§4.4) ----------------------------


async def friends(srv: Running) -> None:
    """alice and bob subscribed to each other ('both'), written straight into storage."""
    for owner, contact in ((ALICE, BOB), (BOB, ALICE)):
        if await srv.storage.find_user(JID.parse(owner)) is None:
            await srv.user(owner.split("@")[0])
        user = await stored(srv, owner)
        user.roster[JID.parse(contact)] = Contact(JID.parse(contact), subscription="both")
        await srv.storage.save_user(user)


def available_from(jid: str) -> Callable[[Any], bool]:
    """Matches available presence from a resource of ``jid`` (for the event
    "presence": slixmpp names a presence with <show/> by its show value)."""
    return lambda p: p["from"].bare == jid and p["type"] in ("available", "", *p.showtypes)


async def test_broadcast_and_probe(server: Running) -> None:
    """Contacts see initial presence and updates; a later login gets it by probe (§4.2-4.4)."""
    await friends(server)
    b = await login(server, "bob")
    seen = expect(b, "presence_available", available_from(ALICE))
    a = await login(server, "alice")
    assert str((await seen)["from"]) == f"{ALICE}/one"
    updated = expect(b, "changed_status", lambda p: p["from"].bare == ALICE
                     and p["status"] == "lunch")
    a.send_presence(pshow="away", pstatus="lunch")
    assert (await updated)["show"] == "away"
    probed = expect(a, "presence_available", available_from(BOB))
    got: list[Any] = []
    await login(server, "bob", "two",
                watch=lambda c: got.append(expect(c, "presence",
                                                  available_from(ALICE))))
    assert (await got[0])["status"] == "lunch"
    await probed


async def test_no_presence_without_subscription(server: Running) -> None:
    """Without a subscription, a probe reveals nothing and no presence is broadcast."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    seen: list[Any] = []
    b.add_event_handler("presence_available", lambda p: seen.append(p)
                        if p["from"].bare == ALICE else None)
    a.send_presence(pstatus="here")
    b.send_presence(pto=ALICE, ptype="probe")
    await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    await b.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    assert seen == []


async def test_a_probe_the_contact_does_not_honour_is_answered_unsubscribed(
        server: Running) -> None:
    """§4.3.2: alice's roster says she is subscribed to bob ("to"), bob's has
    no such thing (a roster out of step, or an account deleted and made
    again); her login's probe is answered "unsubscribed", which ends her
    "to" (A.3): her roster is set right, and no presence is revealed."""
    await server.user("bob")
    await server.user("alice")
    user = await stored(server, ALICE)
    user.roster[JID.parse(BOB)] = Contact(JID.parse(BOB), subscription="to")
    await server.storage.save_user(user)
    pushed: list[Any] = []

    def watch(c: Any) -> None:
        pushed.append(expect(c, "roster_update", lambda iq: items_of(iq).get(BOB, {}).get(
            "subscription") == "none"))
    await login(server, "alice", watch=watch)
    await pushed[0]
    assert await state(server, ALICE, BOB) == ("none", None, False)


# --- step 4: unavailable on logout and abrupt disconnect (§4.5.2, §4.6) ------------


async def test_abrupt_disconnect_sends_unavailable(server: Running) -> None:
    """A contact gets unavailable when the user's connection breaks without one."""
    await friends(server)
    b = await login(server, "bob")
    online = expect(b, "presence_available", available_from(ALICE))
    a = await login(server, "alice")
    await online
    gone = expect(b, "presence_unavailable", lambda p: str(p["from"]) == f"{ALICE}/one")
    a.abort()
    await gone


async def test_directed_presence_withdrawn_on_disconnect(server: Running) -> None:
    """Someone the user sent directed presence to gets unavailable when it goes away."""
    c = await login(server, "carol")
    a = await login(server, "alice")
    directed = expect(c, "presence_available", available_from(ALICE))
    a.send_presence(pto=f"carol@{DOMAIN}/one")
    await directed
    gone = expect(c, "presence_unavailable", lambda p: str(p["from"]) == f"{ALICE}/one")
    a.abort()
    await gone


async def test_explicit_unavailable_reaches_contacts(server: Running) -> None:
    """An explicit unavailable goes to the from/both contacts (§4.5.2)."""
    await friends(server)
    b = await login(server, "bob")
    online = expect(b, "presence_available", available_from(ALICE))
    a = await login(server, "alice")
    await online
    gone = expect(b, "presence_unavailable", lambda p: str(p["from"]) == f"{ALICE}/one")
    a.send_presence(ptype="unavailable")
    await gone
