"""In-memory stand-ins for tests that need no socket.

* :class:`FakeSession`: a bound resource that records what it is sent.
* :class:`World`: a router with one host on memory storage and the named
  modules loaded -- the one router/host fixture of the unit tests.
* The XML level: ``await world.send(session, "<iq type='get' .../>")`` feeds
  a stanza into the router as if that bound session's stream had read it
  (``from`` stamped, RFC 6120 §8.1.2.1) and returns every stanza that
  reached a session meanwhile; :func:`same` compares one with the XML a
  test expects (attribute order and blank text ignored).
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from vinespy import modules as vmodules, ns
from vinespy.config import HostConfig
from vinespy.errors import StreamError
from vinespy.host import PRE, Host
from vinespy.jid import JID
from vinespy.router import Router
from vinespy.sessions import Sessions
from vinespy.storage import Contact, Storage, User
from vinespy.storage.memory import MemoryStorage
from vinespy.xml import Element, stanza

DOMAIN = "wonderland.lit"


class FakeSession:
    """An in-memory bound resource that records what it is sent."""

    def __init__(self, jid: JID | str, available: bool = True, sessions: Any = None) -> None:
        self.jid = JID.parse(jid) if isinstance(jid, str) else jid
        self.available = available
        self.priority = 0
        self.presence: Element | None = None
        self.fields: dict[str, Any] = {}
        self.pre_events: dict[str, str] = {}    # what a real session takes from its host
        self.ending = False
        self.sessions = sessions        # told of field changes, as a stream tells its server's
        self.got: list[Element] = []

    def send(self, st: Element) -> None:
        # A copy: a real session serializes at once, so a sender may reuse
        # the element (the presence module re-addresses one per recipient).
        self.got.append(copy.deepcopy(st))

    def send_serialized(self, st: Element, data: bytes) -> None:
        self.send(st)

    def close(self, error: StreamError | None = None) -> None:
        pass

    def field_changed(self, field: Any, member: Any) -> None:
        if self.sessions is not None:
            self.sessions.field_changed(self, field, member)


class World:
    """A router with one host on memory storage and the ``modules`` loaded
    (none at all when empty: not even the iq dispatcher). ``host_options``
    are HostConfig fields (``private_storage=False``)."""

    def __init__(self, *modules: str, domain: str = DOMAIN, storage: Storage | None = None,
                 **host_options: Any) -> None:
        self.router = Router(Sessions())
        self.storage = storage if storage is not None else MemoryStorage()
        self.host = Host(domain, HostConfig(domains=(domain,), **host_options),
                         self.storage, self.router)
        self.router.add_host(self.host)
        self.bound: list[FakeSession] = []
        if modules:
            vmodules.load(self.host, modules)

    async def account(self, jid: JID, **roster: str) -> None:
        """Create ``jid`` with roster items ``{local: subscription}``."""
        items = {JID.parse(f"{k}@{self.host.domain}"): v for k, v in roster.items()}
        await self.storage.save_user(User(jid, roster={j: Contact(j, subscription=s)
                                                       for j, s in items.items()}))

    def bind(self, jid: JID | str, resource: str = "r", available: bool = True) -> FakeSession:
        """A session for ``jid`` (a bare JID gets ``resource``) in the routing table."""
        full = JID.parse(jid) if isinstance(jid, str) else jid
        s = FakeSession(full if full.resource else full.with_resource(resource), available)
        s.pre_events = self.host.hooked(PRE)          # as a ClientSession takes them
        self.router.sessions.bind(s)
        self.bound.append(s)
        return s

    async def unbind(self, s: FakeSession) -> None:
        """What a closing stream does: leave the table, then tell the modules."""
        self.router.sessions.unbind(s)
        await self.host.bus.fire("resource-unbound", s)

    async def send(self, s: FakeSession, xml: str | Element) -> list[tuple[JID, Element]]:
        """``s`` sends ``xml`` (text in the jabber:client namespace, or an
        element): ``from`` is stamped as the c2s stream does, the router takes
        it. Returns ``(recipient, stanza)`` for every stanza a bound session
        got meanwhile, session by session in the order they were bound."""
        el = parse(xml) if isinstance(xml, str) else xml
        el.set("from", str(s.jid))
        before = [len(b.got) for b in self.bound]
        await self.router.route(el, s)
        return [(b.jid, st) for b, n in zip(self.bound, before) for st in b.got[n:]]

    async def ask(self, s: FakeSession, kind: str, payload: Element, to: JID | None = None,
                  ) -> Element:
        """Send an iq from ``s``; return the one answer it got."""
        iq = stanza("iq", frm=s.jid, to=to, type=kind, id=f"q{len(s.got)}")
        iq.append(payload)
        before = len(s.got)
        await self.router.route(iq, s)
        assert len(s.got) == before + 1, [etree.tostring(x) for x in s.got[before:]]
        return s.got[-1]

    async def presence(self, s: FakeSession, type: str | None = None, status: str = "") -> None:
        p = stanza("presence", frm=s.jid, type=type)
        if status:
            etree.SubElement(p, f"{{{ns.CLIENT}}}status").text = status
        await self.router.route(p, s)


def parse(xml: str) -> Element:
    """One stanza written as a client would, in the jabber:client namespace."""
    wrapper = etree.fromstring(f"<stream xmlns='{ns.CLIENT}'>{xml}</stream>",
                               etree.XMLParser(remove_blank_text=True))
    assert len(wrapper) == 1, f"one stanza expected: {xml}"
    return wrapper[0]


def shape(el: Element) -> tuple[Any, ...]:
    """What :func:`same` compares: tag, sorted attributes, stripped text, children."""
    return (el.tag, sorted(el.attrib.items()), (el.text or "").strip(),
            [shape(c) for c in el])


def same(got: Element, xml: str) -> bool:
    """``got`` is the stanza ``xml`` describes (whatever the attribute order)."""
    return shape(got) == shape(parse(xml))
