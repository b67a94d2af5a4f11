"""What the PEP use-case suites (tests/integration/test_pep_uses.py and
tests/cluster/test_pep_uses_cluster.py) share: a client's ordered inbox,
matchers for PEP notifications, publish-options forms, the payloads of
OMEMO (XEP-0384, both generations) and of the other specs riding on PEP.

Nothing here knows a server: every helper works on a connected slixmpp
client, so the standalone and the cluster suites drive the same stanzas.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any, Awaitable, Callable, NamedTuple
from xml.etree import ElementTree

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.support import TIMEOUT

NS = "http://jabber.org/protocol/pubsub"
NS_EVENT = f"{NS}#event"
NS_ERRORS = f"{NS}#errors"
PUBLISH_OPTIONS = f"{NS}#publish-options"

AVATAR_DATA = "urn:xmpp:avatar:data"            # XEP-0084
AVATAR_META = "urn:xmpp:avatar:metadata"
NICK = "http://jabber.org/protocol/nick"        # XEP-0172
BOOKMARKS = "urn:xmpp:bookmarks:1"              # XEP-0402
LEGACY_BOOKMARKS = "storage:bookmarks"          # XEP-0048 (via XEP-0223)
VCARD_UPDATE = "vcard-temp:x:update"            # XEP-0153

# The plugins every PEP client loads: pubsub, its forms, caps (XEP-0115,
# which carries the +notify interests) and PEP itself.
PEP_PLUGINS = ("xep_0004", "xep_0060", "xep_0115", "xep_0163")


# --- what a client received ---------------------------------------------------------


class Inbox:
    """Every message and presence a client received, in arrival order;
    ``get`` takes the first untaken one a match accepts, waiting for it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[Any] = []
        self._taken: set[int] = set()
        self._changed: asyncio.Event = asyncio.Event()

    def put(self, stanza: Any) -> None:
        self.items.append(stanza)
        self._changed.set()

    def index(self, match: Callable[[Any], bool]) -> int | None:
        return next((i for i, x in enumerate(self.items)
                     if i not in self._taken and match(x)), None)

    async def get(self, match: Callable[[Any], bool], timeout: float = TIMEOUT,
                  what: str = "a stanza") -> Any:
        deadline = time.monotonic() + timeout
        while (i := self.index(match)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout:g} s; got "
                                     + "\n".join(str(x) for x in self.items[-10:]))
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        self._taken.add(i)
        return self.items[i]


def collect(c: slixmpp.ClientXMPP, inbox: Inbox) -> None:
    """Put every message and presence ``c`` receives into ``inbox``; call
    before ``c`` connects so that nothing (a last item on login) is missed."""
    for kind in ("message", "presence"):
        c.register_handler(Callback(f"inbox {kind}", MatchXPath(f"{{{c.default_ns}}}{kind}"),
                                    inbox.put))


_markers = iter(range(1, 1 << 30))


async def barrier(sender: slixmpp.ClientXMPP, to: slixmpp.ClientXMPP, inbox: Inbox) -> list[Any]:
    """What ``to`` received before a chat ``sender`` sends now: the positive
    control of every "X was not sent". Stanzas the server sent ``to`` before
    routing this chat arrive before it (one stream, in order)."""
    text = f"marker {next(_markers)}"
    sender.send_message(mto=to.boundjid.full, mbody=text, mtype="chat")
    marker = await inbox.get(lambda m: m.name == "message" and m["body"] == text,
                             what=f"the chat {text!r}")
    return inbox.items[:inbox.items.index(marker)]


# --- PEP notifications ----------------------------------------------------------------


def pep_event(owner: str, node: str, item_id: str | None = None, *,
              kind: str = "item") -> Callable[[Any], bool]:
    """A notification from ``owner``'s PEP service (XEP-0163 §4.3.1: from the
    bare JID) about ``node``: a published item (``kind`` "item") or a
    retraction ("retract"), of ``item_id`` if given."""
    def match(m: Any) -> bool:
        if m.name != "message" or str(m["from"]) != owner:
            return False
        for items in m.xml.findall(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items"):
            if items.get("node") == node:
                found = items.findall(f"{{{NS_EVENT}}}{kind}")
                if found and (item_id is None or any(x.get("id") == item_id for x in found)):
                    return True
        return False
    return match


def any_pep_event(owner: str, node: str) -> Callable[[Any], bool]:
    """Any pubsub event (item, retract, purge, delete...) from ``owner`` about ``node``."""
    def match(m: Any) -> bool:
        if m.name != "message" or str(m["from"]).split("/")[0] != owner:
            return False
        ev = m.xml.find(f"{{{NS_EVENT}}}event")
        return ev is not None and any(child.get("node") == node for child in ev)
    return match


def event_payload(msg: Any, node: str, ns: str, name: str) -> ElementTree.Element:
    """The ``{ns}name`` payload of the one item of ``node`` a notification carries."""
    items = [i for i in msg.xml.findall(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
             if i.get("node") == node]
    assert len(items) == 1, msg
    (item,) = items[0].findall(f"{{{NS_EVENT}}}item")
    payload = item.find(f"{{{ns}}}{name}")
    assert payload is not None and len(item) == 1, msg
    return payload


def result_items(iq: Any) -> dict[str, ElementTree.Element | None]:
    """item id -> payload of an items retrieval result, in its order."""
    out: dict[str, ElementTree.Element | None] = {}
    for item in iq.xml.findall(f"{{{NS}}}pubsub/{{{NS}}}items/{{{NS}}}item"):
        kids = list(item)
        out[item.get("id", "")] = kids[0] if kids else None
    return out


def shape(el: ElementTree.Element | None) -> Any:
    """An element as nested tuples: what a round trip must preserve."""
    if el is None:
        return None
    return (el.tag, sorted(el.attrib.items()), (el.text or "").strip(),
            tuple(shape(c) for c in el))


# --- requests -------------------------------------------------------------------------


def publish_options(**fields: str) -> Form:
    """A publish-options form (XEP-0060 §7.1.5): ``access_model="open"`` is
    ``pubsub#access_model``."""
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
    for var, value in fields.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


def publish(c: slixmpp.ClientXMPP, node: str, item_id: str, payload: str | ElementTree.Element,
            options: Form | None = None) -> Awaitable[Any]:
    """Publish to one's own PEP service (no 'to': the account, XEP-0163 §3)."""
    el = ElementTree.fromstring(payload) if isinstance(payload, str) else payload
    return c.plugin["xep_0060"].publish(  # type: ignore[no-any-return]
        None, node, id=item_id, payload=el, options=options, timeout=TIMEOUT)


def items_of(c: slixmpp.ClientXMPP, owner: str, node: str,
             item_ids: list[str] | None = None) -> Awaitable[Any]:
    return c.plugin["xep_0060"].get_items(  # type: ignore[no-any-return]
        owner, node, item_ids=item_ids, timeout=TIMEOUT)


class Err(NamedTuple):
    type: str
    condition: str              # RFC 6120 defined condition
    pubsub: str | None          # the pubsub#errors child, if any


async def error_of(request: Awaitable[Any]) -> Err:
    """The error a request is answered with (it must be answered with one)."""
    with pytest.raises(IqError) as exc:
        await request
    err = exc.value.iq["error"]
    apps = [el.tag.split("}", 1)[1] for el in err.xml if el.tag.startswith(f"{{{NS_ERRORS}}}")]
    return Err(err["type"], err["condition"], apps[0] if apps else None)


# XEP-0060 §6.5.9: what a non-authorized entity is answered when it asks for items.
PRESENCE_REQUIRED = Err("auth", "not-authorized", "presence-subscription-required")
CLOSED_NODE = Err("cancel", "not-allowed", "closed-node")


async def interested(c: slixmpp.ClientXMPP, *namespaces: str) -> None:
    """Add ``NS+notify`` for each namespace to ``c``'s features and bring its
    caps hash up to date, before it sends the presence that carries it."""
    for ns in namespaces:
        await c.plugin["xep_0030"].add_feature(f"{ns}+notify")
    await c.plugin["xep_0115"].update_caps(broadcast=False)


# --- OMEMO (XEP-0384): the server only stores and notifies ----------------------------


@dataclasses.dataclass(frozen=True)
class Omemo:
    """One generation of OMEMO's PEP layout."""

    name: str
    ns: str
    devices_node: str
    devices_tag: str            # the device list's root element

    def bundle_node(self, device: int) -> str:
        """The node a device's bundle goes to (legacy: one node per device)."""
        return f"{self.ns}.bundles:{device}" if self.name == "legacy" else f"{self.ns}:bundles"

    def bundle_item(self, device: int) -> str:
        """The bundle's item id (0.8+: the device id, in one node of max_items max)."""
        return "current" if self.name == "legacy" else str(device)

    def bundle_options(self) -> Form:
        if self.name == "legacy":
            return publish_options(access_model="open")
        return publish_options(max_items="max", access_model="open")

    def device_list(self, *devices: int) -> str:
        label = "" if self.name == "legacy" else " label='Gajim on Linux'"
        return (f"<{self.devices_tag} xmlns='{self.ns}'>"
                + "".join(f"<device id='{d}'{label}/>" for d in devices)
                + f"</{self.devices_tag}>")

    def bundle(self, device: int) -> str:
        key = f"{device:08x}"     # stands for base64 key material: the server never reads it
        if self.name == "legacy":
            return (f"<bundle xmlns='{self.ns}'>"
                    f"<signedPreKeyPublic signedPreKeyId='1'>BS{key}</signedPreKeyPublic>"
                    f"<signedPreKeySignature>SIG{key}</signedPreKeySignature>"
                    f"<identityKey>IK{key}</identityKey>"
                    "<prekeys>" + "".join(f"<preKeyPublic preKeyId='{i}'>PK{i}{key}</preKeyPublic>"
                                          for i in range(1, 4)) + "</prekeys></bundle>")
        return (f"<bundle xmlns='{self.ns}'><spk id='0'>SPK{key}</spk><spks>SIG{key}</spks>"
                f"<ik>IK{key}</ik><prekeys>"
                + "".join(f"<pk id='{i}'>PK{i}{key}</pk>" for i in range(1, 4))
                + "</prekeys></bundle>")


LEGACY_OMEMO = Omemo("legacy", "eu.siacs.conversations.axolotl",
                     "eu.siacs.conversations.axolotl.devicelist", "list")
OMEMO_2 = Omemo("omemo:2", "urn:xmpp:omemo:2", "urn:xmpp:omemo:2:devices", "devices")


async def announce(c: slixmpp.ClientXMPP, gen: Omemo, *devices: int) -> None:
    """Publish the device list (item 'current', open) and a bundle per device,
    as Conversations, Dino and Gajim do: publish-options, no node config."""
    await publish(c, gen.devices_node, "current", gen.device_list(*devices),
                  publish_options(access_model="open"))
    for d in devices:
        await publish(c, gen.bundle_node(d), gen.bundle_item(d), gen.bundle(d),
                      gen.bundle_options())


async def check_omemo(c: slixmpp.ClientXMPP, owner: str, gen: Omemo, *devices: int) -> None:
    """``c`` fetches ``owner``'s device list and each bundle, as a client
    starting a session does, and finds what ``announce`` published."""
    got = result_items(await items_of(c, owner, gen.devices_node))
    assert list(got) == ["current"], got
    assert shape(got["current"]) == shape(ElementTree.fromstring(gen.device_list(*devices)))
    for d in devices:
        item = gen.bundle_item(d)
        bundle = result_items(await items_of(c, owner, gen.bundle_node(d), [item]))
        assert list(bundle) == [item], bundle
        assert shape(bundle[item]) == shape(ElementTree.fromstring(gen.bundle(d)))
