"""A storage and a pubsub store filled with one of everything ``vinespy
migrate`` copies, and a snapshot of both to compare a copy with (shared by
tests/storage/test_migrate.py and tests/unit/test_cli_migrate.py)."""

from __future__ import annotations

from typing import Any

from lxml import etree

from vinespy import accounts
from vinespy.jid import JID
from vinespy.storage import Contact, Storage
from vinespy.storage.migrate import NodeData, Owned, read_node, read_owned
from vinespy.storage.pubsub import PubSubStore

DOMAIN = "wonderland.lit"
SERVICE = f"games.{DOMAIN}"
PASSWORD = "old-s3cret"
STRANGER = JID.parse(f"stranger@{DOMAIN}")      # data, but no account


def user(i: int) -> JID:
    return JID.parse(f"user{i}@{DOMAIN}")


def offline(text: str) -> dict[str, str]:
    return {"stamp": "2024-01-02T03:04:05Z",
            "xml": f"<message xmlns='jabber:client' to='user0@{DOMAIN}' "
                   f"from='user1@{DOMAIN}/pc' type='chat'><body>{text}</body></message>"}


async def populate(storage: Storage, users: int = 3, iterations: int = 4096) -> None:
    """``users`` accounts with SCRAM credentials and one of every record each."""
    for i in range(users):
        jid = user(i)
        u = await accounts.create_user(storage, jid, f"{PASSWORD}{i}", iterations)
        peer = user((i + 1) % users)
        u.roster = {peer: Contact(peer, f"Peer \u00e4{i}", "both", None, ["Friends", "\u00dcb"]),
                    STRANGER: Contact(STRANGER, None, "none", "subscribe", [], True, True),
                    JID.parse("asker@elsewhere.example"): Contact(
                        JID.parse("asker@elsewhere.example"), pending_in=True, hidden=True)}
        u.roster_version = 7 + i
        await storage.save_user(u)
        await storage.put(jid, "offline", [offline(f"hello {i}"), offline("second")])
        await storage.put(jid, "blocklist", [f"spam{i}@spam.example"])
        await storage.put(jid, "last", {"time": 1700000000 + i, "status": "away"})
        card = etree.fromstring(f"<vCard xmlns='vcard-temp'><FN>User \u00c4 {i}</FN>"
                                f"<x:n xmlns:x='urn:x'>&amp;</x:n></vCard>")
        await storage.save_vcard(jid, card)
        await storage.save_fragment(jid, etree.fromstring(
            "<storage xmlns='storage:bookmarks'><conference jid='r@c.example' "
            "autojoin='true'/></storage>"))
        await storage.put(jid, "private_names", ["abc"])
    await storage.put(STRANGER, "last", {"time": 1, "status": ""})
    await storage.save_vcard(STRANGER, etree.fromstring("<vCard xmlns='vcard-temp'/>"))


async def populate_pubsub(store: PubSubStore) -> None:
    """Two nodes of SERVICE: config, affiliations, subscriptions, items in order."""
    await store.create(SERVICE, "news", f"user0@{DOMAIN}", {"pubsub#title": "News"})
    await store.set_affiliation(SERVICE, "news", f"user1@{DOMAIN}", "publisher")
    await store.subscribe(SERVICE, "news", f"user2@{DOMAIN}/pc", "sub-1")
    for n in range(5):
        await store.publish(SERVICE, "news", f"item{n}",
                            f"<entry xmlns='urn:e'>{n}</entry>".encode(),
                            f"user0@{DOMAIN}/pc", 10)
    await store.publish(SERVICE, "news", "item1", b"<entry xmlns='urn:e'>again</entry>",
                        f"user1@{DOMAIN}", 10)
    await store.create(SERVICE, "empty", SERVICE, {})


async def snapshot(storage: Storage, pubsub: PubSubStore | None = None
                   ) -> dict[str, Any]:
    """Everything both hold, comparable with ==."""
    owned: dict[str, Owned] = {}
    async for jid in storage.owners():
        owned[str(jid)] = await read_owned(storage, jid)
    nodes: dict[str, NodeData | None] = {}
    if pubsub is not None:
        for name in await pubsub.nodes(SERVICE):
            nodes[name] = await read_node(pubsub, SERVICE, name)
    return {"owned": owned, "nodes": nodes}
