"""XEP-0060 pubsub (issue 6) on a cluster, end to end: real redis-server, real
``vinespy start`` processes with ``pubsub = ["pubsub"]`` in their ``[[host]]``
(the service ``pubsub.wonderland.lit``), real slixmpp clients (xep_0060).

In a cluster the service's nodes, items and subscriptions are in Redis
(:mod:`vinespy.storage.pubsub.redis`), so every node serves the same state, and a
notification reaches subscribers on other nodes through the router: one
inbox stream entry per destination node and flush, not one per subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis
from slixmpp import JID as XMPP_JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.cluster.conftest import (
    ROOT, Client, Clients, Cluster, ClusterFactory, Inbox, RedisServer, Site, env, eventually,
)
from tests.conftest import DOMAIN, PASSWORD, TIMEOUT
from tests.rawclient import Raw
from vinespy import accounts
from vinespy.jid import JID
from vinespy.storage.pubsub import PubSubStore, open_pubsub

pytestmark = [pytest.mark.integration, pytest.mark.redis]

SERVICE = f"pubsub.{DOMAIN}"
PUBSUB = {"pubsub": ["pubsub"]}
NS = "http://jabber.org/protocol/pubsub"
NS_EVENT = f"{NS}#event"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PAYLOAD_NS = "urn:example:vinespy:cluster-test"


# --- helpers ---------------------------------------------------------------------------


def with_pubsub(client: Client) -> Inbox:
    """Register xep_0060 on ``client`` and collect its pubsub event messages
    (headlines carrying ``<event xmlns='...#event'/>``) in an Inbox."""
    xmpp = client.xmpp
    xmpp.register_plugin("xep_0004")
    xmpp.register_plugin("xep_0060")
    events = Inbox(f"{client.jid} pubsub events")
    xmpp.register_handler(Callback(
        f"pubsub events of {client.jid}",
        MatchXPath(f"{{{xmpp.default_ns}}}message/{{{NS_EVENT}}}event"), events.put))
    client.events = events  # type: ignore[attr-defined]
    return events


def events_of(client: Client) -> Inbox:
    inbox: Inbox = client.events  # type: ignore[attr-defined]
    return inbox


def ps(client: Client) -> Any:
    return client.xmpp.plugin["xep_0060"]


def payload(text: str) -> Any:
    """A payload element with an attribute, a child and text to check end to end."""
    return ET.fromstring(f"<entry xmlns='{PAYLOAD_NS}' lang='en'>"
                         f"<title>{text}</title><body kind='plain'>&lt;{text}&gt; ü</body>"
                         f"</entry>")


def shape(el: Any) -> tuple[Any, ...]:
    """An element as nested tuples (tag, attributes, text, tail, children):
    prefixes and serialization details do not matter."""
    return (el.tag, sorted(el.attrib.items()), (el.text or "").strip(), (el.tail or "").strip(),
            tuple(shape(c) for c in el))


def event_kind(node: str, kind: str, item_id: str | None = None) -> Any:
    """A match for event messages about ``node``: ``kind`` is "items" (a
    published ``item_id``), "retract" (of ``item_id``) or "delete"."""
    def match(msg: Any) -> bool:
        ev = msg.xml.find(f"{{{NS_EVENT}}}event")
        if ev is None or msg["type"] != "headline" or str(msg["from"]) != SERVICE:
            return False
        if kind == "delete":
            return any(d.get("node") == node for d in ev.findall(f"{{{NS_EVENT}}}delete"))
        items = [i for i in ev.findall(f"{{{NS_EVENT}}}items") if i.get("node") == node]
        tag = "item" if kind == "items" else "retract"
        return any(x.get("id") == item_id for i in items for x in i.findall(f"{{{NS_EVENT}}}{tag}"))
    return match


def event_payload(msg: Any) -> Any:
    item = msg.xml.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items/{{{NS_EVENT}}}item")
    assert item is not None, msg
    children = list(item)
    assert len(children) == 1, msg
    return children[0]


def form(client: Client, **values: str) -> Any:
    """A submitted pubsub#node_config form; ``max_items="5"`` -> pubsub#max_items."""
    f = client.xmpp.plugin["xep_0004"].make_form(ftype="submit")
    f.add_field(var="FORM_TYPE", ftype="hidden", value=f"{NS}#node_config")
    for k, v in values.items():
        f.add_field(var=f"pubsub#{k}", value=v)
    return f


async def items(client: Client, node: str) -> list[tuple[str, Any]]:
    """(id, payload shape) of every item of ``node``, as ``client`` retrieves them."""
    iq = await ps(client).get_items(SERVICE, node, timeout=TIMEOUT)
    out = []
    for it in iq.xml.findall(f".//{{{NS}}}items/{{{NS}}}item"):
        kids = list(it)
        out.append((it.get("id"), shape(kids[0]) if kids else None))
    return out


async def node_names(client: Client) -> set[str]:
    iq = await client.xmpp.plugin["xep_0030"].get_items(jid=XMPP_JID(SERVICE), timeout=TIMEOUT)
    return {it.get("node", "") for it in iq.xml.findall(f".//{{{NS_DISCO_ITEMS}}}item")}


async def config_of(client: Client, node: str) -> dict[str, str]:
    iq = await ps(client).get_node_config(SERVICE, node, timeout=TIMEOUT)
    values = {}
    for f in iq.xml.iter("{jabber:x:data}field"):
        v = f.find("{jabber:x:data}value")
        values[f.get("var")] = v.text if v is not None and v.text else ""
    return values


async def login_pubsub(xmpp: Clients, node: Any, who: str) -> Client:
    c = await xmpp.login(node, who)
    with_pubsub(c)
    return c


async def up(cluster: ClusterFactory, **kw: Any) -> Cluster:
    return await cluster(2, host=PUBSUB, **kw)


# --- 1. notifications, items, retract, delete across nodes ------------------------------


NEWS_EVENTS = (("items", "i1"), ("items", "i2"), ("retract", "i1"), ("delete", None))


async def test_publish_retract_delete_reach_subscribers_on_both_nodes(
        cluster: ClusterFactory, xmpp: Clients) -> None:
    """alice (A) creates and configures a node; bob (A) and carol (B) subscribe.
    alice's publication (A) and then dave's (B, affiliated publisher) reach
    both subscribers once each with the payload intact, and not the
    non-subscribed publishers; items read through A and through B are the
    same; a retraction and the deletion reach both subscribers; a node
    created on B is listed on A at once and alice publishes to it from A."""
    c = await up(cluster)
    a, b = c["node-a"], c["node-b"]
    alice = await login_pubsub(xmpp, a, "alice/r1")
    bob = await login_pubsub(xmpp, a, "bob/r1")
    carol = await login_pubsub(xmpp, b, "carol/r1")
    dave = await login_pubsub(xmpp, b, "dave/r1")
    subscribers = (bob, carol)

    await ps(alice).create_node(SERVICE, "news", config=form(alice, max_items="5"),
                                timeout=TIMEOUT)
    await ps(alice).set_node_config(
        SERVICE, "news", form(alice, title="Cluster news", max_items="5", notify_retract="1"),
        timeout=TIMEOUT)
    conf = await config_of(alice, "news")
    assert conf["pubsub#title"] == "Cluster news"
    assert conf["pubsub#max_items"] == "5"
    assert conf["pubsub#notify_retract"] in ("1", "true")
    assert "news" in await node_names(carol)            # as B sees it

    for s in subscribers:
        iq = await ps(s).subscribe(SERVICE, "news", timeout=TIMEOUT)
        assert iq["pubsub"]["subscription"]["subscription"] == "subscribed"
        assert iq["pubsub"]["subscription"]["jid"].bare == s.bare

    # alice publishes from A
    p1 = payload("first")
    await ps(alice).publish(SERVICE, "news", id="i1", payload=p1, timeout=TIMEOUT)
    for s in subscribers:
        msg = await events_of(s).get(event_kind("news", "items", "i1"))
        assert shape(event_payload(msg)) == shape(p1)

    # dave (B) may not publish until alice makes him a publisher
    with pytest.raises(IqError) as refused:
        await ps(dave).publish(SERVICE, "news", id="nope", payload=payload("x"),
                               timeout=TIMEOUT)
    assert refused.value.condition == "forbidden"
    await ps(alice).modify_affiliations(SERVICE, "news", [(dave.bare, "publisher")],
                                        timeout=TIMEOUT)
    p2 = payload("second")
    await ps(dave).publish(SERVICE, "news", id="i2", payload=p2, timeout=TIMEOUT)
    for s in subscribers:
        msg = await events_of(s).get(event_kind("news", "items", "i2"))
        assert shape(event_payload(msg)) == shape(p2)

    # the same items through either node
    want = [("i1", shape(p1)), ("i2", shape(p2))]
    assert await items(bob, "news") == want
    assert await items(carol, "news") == want

    # retraction, notified on both nodes
    await ps(alice).retract(SERVICE, "news", "i1", notify=True, timeout=TIMEOUT)
    for s in subscribers:
        await events_of(s).get(event_kind("news", "retract", "i1"))
    assert await items(bob, "news") == [("i2", shape(p2))]
    assert await items(carol, "news") == [("i2", shape(p2))]

    # a node created on B is there on A at once: listed, and published to
    await ps(carol).create_node(SERVICE, "from-b", config=form(carol, publish_model="open"),
                                timeout=TIMEOUT)
    assert "from-b" in await node_names(alice)
    await ps(carol).subscribe(SERVICE, "from-b", timeout=TIMEOUT)
    p3 = payload("from A to B's node")
    await ps(alice).publish(SERVICE, "from-b", id="b1", payload=p3, timeout=TIMEOUT)
    msg = await events_of(carol).get(event_kind("from-b", "items", "b1"))
    assert shape(event_payload(msg)) == shape(p3)
    assert await items(bob, "from-b") == [("b1", shape(p3))]

    # deletion, notified on both nodes
    await ps(alice).delete_node(SERVICE, "news", timeout=TIMEOUT)
    for s in subscribers:
        await events_of(s).get(event_kind("news", "delete"))
    assert "news" not in await node_names(bob)
    assert "news" not in await node_names(carol)

    # each notification exactly once; none for the publishers (not subscribed).
    # That nothing more arrives can only be shown by waiting for nothing: a
    # bounded 0.3 s window (Inbox.none), watched on every inbox at once.
    news = [event_kind("news", kind, item_id) for kind, item_id in NEWS_EVENTS]
    await asyncio.gather(
        *(events_of(s).none(lambda m: any(match(m) for match in news), 0.3)
          for s in subscribers),
        *(events_of(p).none(lambda m: True, 0.3) for p in (alice, dave)))
    for s in subscribers:
        for kind, item_id in NEWS_EVENTS:
            got = events_of(s).matching(event_kind("news", kind, item_id))
            assert len(got) == 1, (s, kind, item_id, len(got))
    for p in (alice, dave):
        assert not events_of(p).matching(lambda m: True), p


# --- 2. 1,000 subscribers over 2 nodes ---------------------------------------------------


N_USERS = 1000


async def add_users(site: Site, n: int) -> list[str]:
    """u0..u{n-1} in the site's storage (one real create_user, its keys copied)."""
    storage = site.open()
    try:
        first = await accounts.create_user(storage, JID.parse(f"u0@{DOMAIN}"), PASSWORD,
                                           iterations=4096)
        for i in range(1, n):
            first.jid = JID.parse(f"u{i}@{DOMAIN}")
            await storage.save_user(first)
    finally:
        await storage.close()
    return [f"u{i}@{DOMAIN}" for i in range(n)]


class Counting:
    """A raw session whose reader counts how often ``token`` arrives (and when
    it first did)."""

    def __init__(self, raw: Raw, jid: str) -> None:
        self.raw = raw
        self.jid = jid
        self.token = b""
        self.count = 0
        self.first: float | None = None
        self.task: asyncio.Task[None] | None = None

    def watch(self, token: bytes, done: asyncio.Event, counter: list[int]) -> None:
        """Count ``token`` from now on; the first time, count this session in
        ``counter[0]`` and set ``done`` once that reaches ``counter[1]``."""
        self.token, self.count, self.first = token, 0, None
        keep = len(token) - 1       # a token cut by a read boundary: its start is kept

        async def read() -> None:
            data, self.raw.buf = self.raw.buf, b""
            while True:
                n = data.count(token)
                if n:
                    if self.first is None:
                        self.first = time.perf_counter()
                        counter[0] += 1
                        if counter[0] >= counter[1]:
                            done.set()
                    self.count += n
                tail = data[-keep:]
                chunk = await self.raw.reader.read(65536)
                if not chunk:
                    return
                data = tail + chunk
        self.task = asyncio.create_task(read())


async def raw_login(node: Any, ctx: ssl.SSLContext, bare: str, resource: str) -> Counting:
    raw = await Raw.connect(node.port, host=node.address)
    try:
        jid = await raw.login(DOMAIN, ctx, bare.split("@")[0], PASSWORD, resource)
        raw.send("<presence/>")
        raw.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await raw.expect(rb"id=['\"]p1['\"]")
    except BaseException:
        raw.close()
        raise
    return Counting(raw, jid)


async def login_many(node: Any, ctx: ssl.SSLContext, bares: list[str],
                     parallel: int = 50) -> list[Counting]:
    sem = asyncio.Semaphore(parallel)

    async def one(bare: str) -> Counting:
        async with sem:
            return await raw_login(node, ctx, bare, "raw")
    return list(await asyncio.gather(*(one(b) for b in bares)))


async def all_available(redis: RedisServer, bares: list[str]) -> bool:
    """True when every bare JID has an available resource in Redis's routes."""
    async with redis._once() as r:
        async with r.pipeline(transaction=False) as pipe:
            for bare in bares:
                pipe.hgetall(f"sessions:{bare}")
            rows = await pipe.execute()
    return all(any('"available": true' in v or '"available":true' in v for v in row.values())
               for row in rows)


@contextlib.asynccontextmanager
async def cluster_store(site: Site, redis: RedisServer) -> AsyncIterator[PubSubStore]:
    """The cluster's pubsub store, with a connection of the test's own: Redis
    for nodes on fs, the database for nodes on PostgreSQL (store_for)."""
    if site.kind != "fs":
        store = open_pubsub("sql", storage=site.open(), owned=True)
        try:
            yield store
        finally:
            await store.close()
        return
    client = aioredis.Redis.from_url(redis.url, socket_timeout=10)
    store = open_pubsub("redis", redis=client)
    try:
        yield store
    finally:
        await client.aclose()


async def xadds(redis: RedisServer) -> int:
    async with redis._once() as r:
        stats = await r.info("commandstats")
    return int(stats.get("cmdstat_xadd", {}).get("calls", 0))


STREAMS = ("cluster:inbox:node-a", "cluster:inbox:node-b", "cluster:events")


async def stream_ids(redis: RedisServer) -> dict[str, set[str]]:
    """The entry ids of the inter-node streams."""
    out = {}
    async with redis._once() as r:
        for key in STREAMS:
            out[key] = {str(e[0]) for e in await r.xrange(key) or ()}
    return out


@dataclasses.dataclass
class Bulk:
    """One publication to the 1,000 subscribers, as measured."""

    ms: float                   # publish sent -> the last subscriber's notification
    acked_ms: float             # publish sent -> its result
    xadd: int                   # XADD calls (INFO commandstats) during it
    entries: dict[str, int]     # new entries per inter-node stream
    per_session: set[int]       # notifications per session (want {1})
    on_a: int                   # sessions on A notified
    on_b: int

    def __str__(self) -> str:
        return (f"publish -> last of {N_USERS} notifications {self.ms:.1f} ms (acked after "
                f"{self.acked_ms:.1f} ms); notified on A/B {self.on_a}/{self.on_b}; "
                f"XADD calls {self.xadd}; new stream entries {self.entries}")


@contextlib.asynccontextmanager
async def thousand(cluster: ClusterFactory, xmpp: Clients, site: Site,
                   redis: RedisServer) -> AsyncIterator[tuple[Client, list[Counting]]]:
    """Two nodes; node "bulk" owned by alice (on A) with u0..u999 subscribed
    (bare JIDs, through the cluster's store); u0, u2... logged in on A (raw), u1,
    u3... on B, all available in Redis's routes. Yields (alice, sessions),
    the sessions on A first."""
    bares = await add_users(site, N_USERS)
    c = await up(cluster, log="info")
    a, b = c["node-a"], c["node-b"]
    alice = await login_pubsub(xmpp, a, "alice/r1")
    await ps(alice).create_node(SERVICE, "bulk", timeout=TIMEOUT)
    async with cluster_store(site, redis) as store:
        for i, bare in enumerate(bares):
            assert await store.subscribe(SERVICE, "bulk", bare, f"sub{i}")
        assert len(await store.subscriptions(SERVICE, "bulk")) == N_USERS

    ctx = ssl.create_default_context()
    site.ca.configure_trust(ctx)
    t0 = time.perf_counter()
    sessions: list[Counting] = []
    try:
        sessions += await login_many(a, ctx, bares[0::2])
        sessions += await login_many(b, ctx, bares[1::2])
        print(f"\n{N_USERS} raw logins in {time.perf_counter() - t0:.1f} s")
        await eventually(lambda: all_available(redis, bares), 30.0,
                         f"{N_USERS} available routes in Redis", every=0.2)
        yield alice, sessions
    finally:
        for s in sessions:
            if s.task is not None:
                s.task.cancel()
            s.raw.close()


async def publish_bulk(alice: Client, sessions: list[Counting], redis: RedisServer) -> Bulk:
    """alice publishes one item to "bulk"; wait until every session has its
    notification (AssertionError after 30 s) and 0.5 s more for duplicates."""
    item_id = f"bulk-{secrets.token_hex(6)}"
    done = asyncio.Event()
    counter = [0, len(sessions)]
    for s in sessions:
        if s.task is not None:
            s.task.cancel()
            await asyncio.gather(s.task, return_exceptions=True)
        s.watch(item_id.encode(), done, counter)
    before = await stream_ids(redis)
    await redis.execute("CONFIG", "RESETSTAT")
    start = time.perf_counter()
    await ps(alice).publish(SERVICE, "bulk", id=item_id, payload=payload("bulk"),
                            timeout=TIMEOUT)
    acked = time.perf_counter()
    try:
        await asyncio.wait_for(done.wait(), 30.0)
    except asyncio.TimeoutError:
        missing = [s.jid for s in sessions if s.first is None]
        raise AssertionError(f"{len(missing)} of {len(sessions)} got no notification within "
                             f"30 s: {missing[:10]}") from None
    last = max(s.first for s in sessions if s.first is not None)
    n_xadd = await xadds(redis)
    after = await stream_ids(redis)
    # Duplicates, if any, arrive meanwhile: that none does can only be shown by
    # waiting for nothing, a bounded 0.5 s window (the counts are read after it).
    await asyncio.sleep(0.5)
    half = len(sessions) // 2
    return Bulk(ms=(last - start) * 1000, acked_ms=(acked - start) * 1000, xadd=n_xadd,
                entries={k.split(":")[-1]: len(after[k] - before[k]) for k in STREAMS},
                per_session={s.count for s in sessions},
                on_a=sum(1 for s in sessions[:half] if s.first is not None),
                on_b=sum(1 for s in sessions[half:] if s.first is not None))


def check_delivered(r: Bulk) -> None:
    assert r.per_session == {1}, f"notifications per session: {sorted(r.per_session)}"
    assert (r.on_a, r.on_b) == (N_USERS // 2, N_USERS // 2)


async def test_thousand_subscribers_over_two_nodes_one_entry_per_node(
        cluster: ClusterFactory, xmpp: Clients, site: Site, redis: RedisServer) -> None:
    """1,000 users, each subscribed (bare JID, written through the cluster's store)
    and logged in by a raw client, half on A and half on B. Each of three items
    alice publishes from A reaches every one of them exactly once, and costs
    one XADD (the entry in B's inbox; at most a handful allowed), not one per
    remote subscriber: also the first, while A has yet to read the
    subscribers' blocklists (a storage read per recipient, awaited in the
    middle of the fan-out)."""
    async with thousand(cluster, xmpp, site, redis) as (alice, sessions):
        for i in range(3):
            r = await publish_bulk(alice, sessions, redis)
            print(f"publication {i + 1}: {r}")
            check_delivered(r)
            assert r.xadd <= 4, f"{r.xadd} XADDs for one publication to {N_USERS // 2} remote"
            assert r.entries["node-b"] <= 2, r.entries
            assert r.entries["node-a"] == 0, r.entries


# --- 3. restart --------------------------------------------------------------------------


async def test_items_and_subscriptions_survive_restart_of_both_nodes(
        cluster: ClusterFactory, xmpp: Clients) -> None:
    """Nodes, items and subscriptions live in Redis: after SIGTERM of both nodes
    and a new start, both serve the node with its items (and config), the
    subscriptions are still listed, and a new publication reaches the
    subscriber, who re-subscribed nothing."""
    c = await up(cluster)
    a, b = c["node-a"], c["node-b"]
    alice = await login_pubsub(xmpp, a, "alice/r1")
    carol = await login_pubsub(xmpp, b, "carol/r1")
    await ps(alice).create_node(SERVICE, "durable", config=form(alice, title="Durable"),
                                timeout=TIMEOUT)
    await ps(carol).subscribe(SERVICE, "durable", timeout=TIMEOUT)
    published = []
    for i in range(3):
        p = payload(f"kept {i}")
        await ps(alice).publish(SERVICE, "durable", id=f"k{i}", payload=p, timeout=TIMEOUT)
        published.append((f"k{i}", shape(p)))
    await events_of(carol).get(event_kind("durable", "items", "k2"))

    await asyncio.gather(a.stop(), b.stop())
    assert a.returncode == 0 and b.returncode == 0, (a.returncode, b.returncode)
    await asyncio.gather(a.start(), b.start())

    alice = await login_pubsub(xmpp, b, "alice/r2")          # the nodes swapped
    carol = await login_pubsub(xmpp, a, "carol/r2")
    assert await items(alice, "durable") == published
    assert await items(carol, "durable") == published
    assert "durable" in await node_names(carol)
    assert (await config_of(alice, "durable"))["pubsub#title"] == "Durable"
    iq = await ps(alice).get_node_subscriptions(SERVICE, "durable", timeout=TIMEOUT)
    subs = {str(s["jid"]) for s in iq["pubsub_owner"]["subscriptions"]}
    assert subs == {carol.bare}
    p = payload("after restart")
    await ps(alice).publish(SERVICE, "durable", id="k3", payload=p, timeout=TIMEOUT)
    msg = await events_of(carol).get(event_kind("durable", "items", "k3"))
    assert shape(event_payload(msg)) == shape(p)


# --- 4. the CLI against the live cluster ------------------------------------------------


def has_pubsub_cli() -> bool:
    r = subprocess.run([sys.executable, "-m", "vinespy", "pubsub", "--help"], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and "create" in r.stdout


def vinespy(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vinespy", *args, "-c", str(config)],
                          cwd=config.parent, env=env(), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


async def cli(config: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = await asyncio.to_thread(vinespy, config, *args)
    if ok:
        assert r.returncode == 0, f"vinespy {' '.join(args)}: {r.returncode}\n{r.stdout}{r.stderr}"
    return r


@pytest.mark.skipif(os.environ.get("VINESPY_TEST_NO_CLI") == "1", reason="asked")
async def test_cli_pubsub_against_the_live_cluster(cluster: ClusterFactory,
                                                   xmpp: Clients) -> None:
    """``vinespy pubsub create|list|subscribers|items|delete -c NODE/config.toml``
    works on the cluster's Redis while the nodes run: a node the CLI creates
    (owner alice) is published to by alice on A and subscribed by carol on B;
    the CLI lists it, its subscriber and its item; the CLI's delete removes it
    for both nodes."""
    if not await asyncio.to_thread(has_pubsub_cli):
        pytest.skip("no `vinespy pubsub` command yet")
    c = await up(cluster)
    a, b = c["node-a"], c["node-b"]
    config = a.config
    alice = await login_pubsub(xmpp, a, "alice/r1")
    carol = await login_pubsub(xmpp, b, "carol/r1")

    await cli(config, "pubsub", "create", SERVICE, "by-cli", "--owner", f"alice@{DOMAIN}")
    assert "by-cli" in await node_names(carol)
    assert "by-cli" in (await cli(config, "pubsub", "list", SERVICE)).stdout
    await ps(carol).subscribe(SERVICE, "by-cli", timeout=TIMEOUT)
    p = payload("via the CLI's node")
    await ps(alice).publish(SERVICE, "by-cli", id="c1", payload=p, timeout=TIMEOUT)
    msg = await events_of(carol).get(event_kind("by-cli", "items", "c1"))
    assert shape(event_payload(msg)) == shape(p)

    subs = (await cli(config, "pubsub", "subscribers", SERVICE, "by-cli")).stdout
    assert carol.bare in subs
    its = (await cli(config, "pubsub", "items", SERVICE, "by-cli")).stdout
    assert re.search(r"\bc1\b", its), its

    await cli(config, "pubsub", "delete", SERVICE, "by-cli")
    assert "by-cli" not in await node_names(alice)
    assert "by-cli" not in await node_names(carol)
    assert "by-cli" not in (await cli(config, "pubsub", "list", SERVICE)).stdout
