"""Roster limits (``[host.options.roster]``) on every path that creates a roster
record, end to end with real slixmpp clients: roster sets (RFC 6121 §2.3),
outbound subscribe (§3.1.2) and pre-approval (§3.4), approving a stranger's
request (§3.1.4), and the hidden records that strangers' requests leave
(§3.1.3, Appendix A.1 state 3); plus the size of one item (§2.3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import DOMAIN, ServerFactory
from tests.integration.test_roster import error_of, expect, get_roster, is_push, raw_iq, stored
from tests.integration.test_subscription import from_, login
from vinespy.jid import JID

pytestmark = pytest.mark.integration

ROSTER = "jabber:iq:roster"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
GHOSTS = [f"ghost{i}@{DOMAIN}" for i in range(4)]      # made-up: no such accounts


def limits(**options: int) -> str:
    return "[host.options.roster]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())


def condition(presence: Any) -> str:
    return str(presence["error"]["condition"])


async def roster_jids(srv: Any, owner: str) -> dict[str, bool]:
    """Every stored record of ``owner``: JID -> hidden."""
    return {str(j): c.hidden for j, c in (await stored(srv, owner)).roster.items()}


async def fill(a: Any, jids: list[str], type: str = "subscribe") -> None:
    """``a`` sends ``type`` to each JID and waits for the push of each new item."""
    for jid in jids:
        pushed = expect(a, "roster_update", is_push(jid))
        a.send_presence(pto=jid, ptype=type)
        await pushed


@pytest.mark.parametrize("type", ["subscribe", "subscribed"])
async def test_outbound_request_or_preapproval_respects_max_items(
        make_server: ServerFactory, type: str) -> None:
    """A subscribe or a pre-approval (subscribed) to a new JID when the roster
    holds max_items items is refused with <not-allowed/> from that JID; nothing
    is stored, pushed or routed. Before, each one added an item beyond the cap."""
    async with make_server(extra=limits(max_items=2)) as srv:
        a = await login(srv, "alice")
        await fill(a, GHOSTS[:2], type)
        refused = expect(a, "presence_error", from_(GHOSTS[2]))
        a.send_presence(pto=GHOSTS[2], ptype=type)
        error = await refused
        assert condition(error) == "not-allowed"
        assert "2 items" in error["error"]["text"]
        assert await roster_jids(srv, ALICE) == {GHOSTS[0]: False, GHOSTS[1]: False}
        assert sorted(await get_roster(a)) == GHOSTS[:2]
        # The items it holds still change: a request to one of them is no new item.
        pushed = expect(a, "roster_update", is_push(GHOSTS[0]))
        a.send_presence(pto=GHOSTS[0], ptype="subscribed" if type == "subscribe"
                        else "subscribe")
        await pushed


async def test_approving_stranger_respects_max_items(make_server: ServerFactory) -> None:
    """Approving a stranger's pending request makes it a roster item: refused when
    the roster is full; the request stays pending and the stranger gets nothing."""
    async with make_server(extra=limits(max_items=2)) as srv:
        a = await login(srv, "alice")
        b = await login(srv, "bob")
        await fill(a, GHOSTS[:2])
        request = expect(a, "presence_subscribe", from_(BOB))
        b.send_presence(pto=ALICE, ptype="subscribe")
        await request
        refused = expect(a, "presence_error", from_(BOB))
        a.send_presence(pto=BOB, ptype="subscribed")
        assert condition(await refused) == "not-allowed"
        contact = (await stored(srv, ALICE)).roster[JID.parse(BOB)]
        assert contact.hidden and contact.pending_in and contact.subscription == "none"
        assert (await stored(srv, BOB)).roster[JID.parse(ALICE)].ask == "subscribe"


async def test_strangers_pending_requests_are_capped(make_server: ServerFactory) -> None:
    """A user keeps at most max_pending requests from strangers: the next one is
    refused to its sender with <resource-constraint/> and not stored; once the
    user answers one, a new request is taken again."""
    async with make_server(extra=limits(max_pending=2)) as srv:
        a = await login(srv, "alice")
        askers = [await login(srv, f"s{i}") for i in range(3)]
        for s in askers[:2]:
            request = expect(a, "presence_subscribe", from_(s.boundjid.bare))
            s.send_presence(pto=ALICE, ptype="subscribe")
            await request
        late = askers[2]
        refused = expect(late, "presence_error", from_(ALICE))
        late.send_presence(pto=ALICE, ptype="subscribe")
        assert condition(await refused) == "resource-constraint"
        assert await roster_jids(srv, ALICE) == {f"s0@{DOMAIN}": True, f"s1@{DOMAIN}": True}
        denied = expect(askers[0], "presence_unsubscribed", from_(ALICE))
        a.send_presence(pto=f"s0@{DOMAIN}", ptype="unsubscribed")
        await denied
        request = expect(a, "presence_subscribe", from_(late.boundjid.bare))
        late.send_presence(pto=ALICE, ptype="subscribe")
        await request
        assert await roster_jids(srv, ALICE) == {f"s1@{DOMAIN}": True, f"s2@{DOMAIN}": True}


async def test_requests_from_roster_items_are_not_capped(make_server: ServerFactory) -> None:
    """The pending cap counts strangers only: a contact already in the roster may
    ask even when max_pending strangers wait."""
    async with make_server(extra=limits(max_pending=1)) as srv:
        a = await login(srv, "alice")
        b = await login(srv, "bob")
        s = await login(srv, "s0")
        await a.update_roster(BOB, name="Bob", timeout=10)
        request = expect(a, "presence_subscribe", from_(f"s0@{DOMAIN}"))
        s.send_presence(pto=ALICE, ptype="subscribe")
        await request
        request = expect(a, "presence_subscribe", from_(BOB))
        b.send_presence(pto=ALICE, ptype="subscribe")
        await request


def item(jid: str, name: str | None = None, groups: list[str] | tuple[str, ...] = ()) -> str:
    attrs = f" name='{name}'" if name is not None else ""
    body = "".join(f"<group>{g}</group>" for g in groups)
    return f"<query xmlns='{ROSTER}'><item jid='{jid}'{attrs}>{body}</item></query>"


async def test_groups_per_item_default_cap(make_server: ServerFactory) -> None:
    """An item takes at most 25 groups by default: 26 is <not-acceptable/> (RFC 6121
    §2.3.3, a server-configured limit), 25 pass. Before, any number was stored."""
    async with make_server() as srv:
        a = await login(srv, "alice")
        groups = [f"g{i}" for i in range(26)]
        assert await error_of(raw_iq(a, "set", item(BOB, groups=groups))) == "not-acceptable"
        assert await roster_jids(srv, ALICE) == {}
        await raw_iq(a, "set", item(BOB, groups=groups[:25]))
        assert len((await get_roster(a))[BOB]["groups"]) == 25


async def test_item_size_options(make_server: ServerFactory) -> None:
    """max_groups and max_length (bytes of the name and of each group) are options."""
    async with make_server(extra=limits(max_groups=2, max_length=8)) as srv:
        a = await login(srv, "alice")
        for query in (item(BOB, groups=["a", "b", "c"]), item(BOB, name="n" * 9),
                      item(BOB, groups=["\u00e9" * 5])):      # 10 bytes in UTF-8
            assert await error_of(raw_iq(a, "set", query)) == "not-acceptable"
        await raw_iq(a, "set", item(BOB, name="n" * 8, groups=["a", "\u00e9" * 4]))
        assert (await get_roster(a))[BOB]["name"] == "n" * 8
