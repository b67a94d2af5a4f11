"""XEP-0049: Private XML Storage (``jabber:iq:private``), when the host allows it.

Only with ``private_storage = true`` in the host's ``[[host]]`` table; without
it every request gets ``<service-unavailable/>``, as if the module were not
there. The rules, quoted from XEP-0049 1.2 §2.3 and §3:

* "If a user attempts to get or set jabber:iq:private data that belongs to
  another user, the server MUST return a "Forbidden" or "Service
  Unavailable" error to the sender (... the former is preferable)": anything
  addressed elsewhere than the sender's own account (another user, the
  server) gets ``<forbidden/>``.
* "At least one child element with a proper namespace MUST be included;
  otherwise the server MUST respond with a "Not Acceptable" error": an empty
  query, or a child without a namespace of its own, gets
  ``<not-acceptable/>``. (The next paragraph says a get without a child
  "SHOULD return a "Bad Format" error (however, some existing
  implementations return a "Not Acceptable" error ...)"; the MUST wins, and
  the XEP's own example answers ``<not-acceptable/>``.)
* "Certain namespaces are reserved in Jabber (namespaces beginning with
  'jabber:' or 'http://jabber.org/', as well as 'vcard-temp') ... some
  server implementations have chosen to return an error (commonly "Not
  Acceptable")": refused with ``<not-acceptable/>`` (the error table:
  "The IQ get or set is qualified by a reserved namespace").
* "A client MUST NOT query for more than namespace in a single IQ get
  request. However, an IQ set or result MAY contain multiple elements
  qualified by the same namespace": a query may hold several elements of
  one namespace; several namespaces, or one qualified name twice, is
  ``<bad-request/>``. Each element is kept under its qualified name; a get
  returns each stored element, or the empty element asked for when nothing
  is stored under that name.

* Limits (options; the XEP sets none): a fragment larger than ``max_size``
  bytes serialized (default 65536, as a vCard and a pubsub item: the
  default stanza limit, so no client that works today is refused) and a set
  that would keep more than ``max_fragments`` qualified names for the user
  (default 100: clients keep a handful, bookmarks, roster notes and
  preferences) are refused as a whole with ``<not-acceptable/>`` (type
  modify) and a text naming the limit: RFC 6120 §8.3.3.9, "does not meet
  criteria defined by the recipient or server", the condition the XEP
  already uses for what the server will not store ("Not Acceptable": "The
  IQ get or set is qualified by a reserved namespace"). Not
  ``<resource-constraint/>`` (§8.3.3.18), whose type wait tells the client
  to retry as is. Together they bound a user's private storage (100 x 64
  KiB by default), whatever the stanza limit. The names a user has stored are
  counted in the keyval store ``private_names`` (the SHA-256 of each
  qualified name, so long names cost little); a fragment stored before
  that count existed counts from the first time it is set again.

XEP-0049 defines no service discovery feature, so none is advertised.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID
from ..storage import xml_bytes
from ..xml import Element, element, local_name, namespace
from . import Module, Option, iq

PRIVATE = "jabber:iq:private"
RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")
RESERVED = frozenset({"vcard-temp"})
NAMES = "private_names"     # keyval store: the SHA-256 of each stored qualified name
LOCK_STRIPES = 64


def reserved(ns: str) -> bool:
    """A namespace XEP-0049 §2.3 calls reserved (or none at all)."""
    return not ns or ns in RESERVED or ns.startswith(RESERVED_PREFIXES)


def name_key(fragment: Element) -> str:
    """What counts ``fragment``'s qualified name: the SHA-256 of ``ns``, NUL,
    ``name`` (XML text holds no NUL, so no two names share it)."""
    qualified = f"{namespace(fragment)}\0{local_name(fragment)}"
    return hashlib.sha256(qualified.encode("utf-8")).hexdigest()


class Private(Module):
    name = "private"
    xep = "XEP-0049"
    options = {
        "max_fragments": Option(int, default=100, min=1, max=100_000),
        "max_size": Option(int, default=65536, min=1024, max=16 * 1024 * 1024),
    }

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_fragments: int = self.option("max_fragments")
        self.max_size: int = self.option("max_size")
        # A fixed pool (one JID always maps to the same lock): counting and
        # storing one user's names is serialized within this process.
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    def _fragments(self, ev: StanzaEvent) -> list[Element]:
        """The query's elements, once every rule above holds."""
        if not self.host.config.private_storage:
            raise StanzaError("service-unavailable")
        if ev.to_type != "self":
            raise StanzaError("forbidden", "private XML belongs to its owner only")
        fragments = [el for el in ev.stanza[0] if isinstance(el.tag, str)]
        if not fragments:
            raise StanzaError("not-acceptable", "the query needs an element to store or fetch")
        namespaces = {namespace(el) for el in fragments}
        if len(namespaces) > 1:
            raise StanzaError("bad-request", "one namespace per request")
        ns = namespaces.pop()
        if reserved(ns):
            raise StanzaError("not-acceptable", f"the namespace {ns!r} is reserved")
        names = [local_name(el) for el in fragments]
        if len(set(names)) != len(names):
            raise StanzaError("bad-request", "the same element twice")
        return fragments

    @iq("get", PRIVATE, "query", to=("self", "bare", "host"))
    async def fetch(self, ev: StanzaEvent) -> Element:
        q = element(PRIVATE, "query")
        for asked in self._fragments(ev):
            ns, name = namespace(asked), local_name(asked)
            found = await self.host.storage.find_fragment(ev.to, ns, name)
            q.append(found if found is not None else element(ns, name))
        return q

    @iq("set", PRIVATE, "query", to=("self", "bare", "host"))
    async def store(self, ev: StanzaEvent) -> None:
        fragments = self._fragments(ev)
        for fragment in fragments:
            size = len(xml_bytes(fragment))
            if size > self.max_size:
                raise StanzaError("not-acceptable", f"<{local_name(fragment)}/> is {size} bytes; "
                                                    f"at most {self.max_size} are kept")
        bare = ev.to.bare
        async with self._locks[hash(bare) % LOCK_STRIPES]:
            await self._count(bare, fragments)
            for fragment in fragments:
                await self.host.storage.save_fragment(bare, fragment)
        return None

    async def _count(self, bare: JID, fragments: list[Element]) -> None:
        """Add the new names among ``fragments`` to the user's count, or refuse
        the set if they would take it past ``max_fragments``."""
        def count(stored: Any) -> list[str]:
            # Inside one storage transaction (Storage.modify): a set from
            # another node in the same instant is counted too.
            if not isinstance(stored, list) or not all(isinstance(k, str) for k in stored):
                if stored is not None:
                    self.log.warning("ignoring a malformed %s record of %s", NAMES, bare)
                stored = []
            known = set(stored)
            new = [key for key in dict.fromkeys(map(name_key, fragments)) if key not in known]
            if len(known) + len(new) > self.max_fragments:
                raise StanzaError("not-acceptable",
                                  f"at most {self.max_fragments} private XML elements are "
                                  f"kept per user; {len(known)} are stored")
            return stored + new

        await self.host.storage.modify(bare, NAMES, count)
