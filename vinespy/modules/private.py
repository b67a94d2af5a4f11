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

XEP-0049 defines no service discovery feature, so none is advertised.
"""

from __future__ import annotations

from ..errors import StanzaError
from ..events import StanzaEvent
from ..xml import Element, element, local_name, namespace
from . import Module, iq

PRIVATE = "jabber:iq:private"
RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")
RESERVED = frozenset({"vcard-temp"})


def reserved(ns: str) -> bool:
    """A namespace XEP-0049 §2.3 calls reserved (or none at all)."""
    return not ns or ns in RESERVED or ns.startswith(RESERVED_PREFIXES)


class Private(Module):
    name = "private"
    xep = "XEP-0049"

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
        for fragment in self._fragments(ev):
            await self.host.storage.save_fragment(ev.to, fragment)
        return None
