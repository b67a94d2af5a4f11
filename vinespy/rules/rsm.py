"""XEP-0059 (Result Set Management) rules, without I/O: the ``<set/>`` a
request carries and the one a result page answers with.

What a request may ask, and what it gets here:

* ``<max/>``: a page of at most that many items (§2.1); 0 asks for the
  count alone (§2.7). A server MAY limit pages (XEP-0313 §4.3.1), so a
  larger max is capped, not refused; no max means the server's default.
* ``<after>UID</after>``: the page right after that item (§2.2);
  ``<before>UID</before>`` the page right before it (§2.3); an empty
  ``<before/>`` the last page of the set (§2.5). Whether the UID exists is
  the store's question: ``<item-not-found/>`` when it does not (§2.4,
  XEP-0313 §4.3.2).
* ``<index/>``: refused with ``<feature-not-implemented/>``, which the XEP
  allows when deriving an item from its position is "impossible or
  exceptionally resource intensive" (§2.6; an archive is paged by id, not read
  whole to be counted).

A page's answer (:func:`set_element`) names its first and last UIDs, which
§2.2 requires of a server that pages, and leaves both out of an empty page;
``<count/>`` and ``index`` are optional (§2.2: omitted only when too costly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

from .. import ns
from ..errors import StanzaError
from ..xml import Element, child, element

NS = ns.RSM
T = TypeVar("T")


@dataclass(frozen=True)
class Rsm:
    """What a request's ``<set/>`` asks for.

    ``before`` is None when absent, ``""`` for an empty ``<before/>`` (the
    last page), else a UID; ``max`` is already capped by the server's limit.
    """

    max: int
    after: str | None = None
    before: str | None = None

    @property
    def backward(self) -> bool:
        """The page ends where the request says (``<before/>``): the store
        reads from the newest end."""
        return self.before is not None


def _text(el: Element | None) -> str | None:
    return None if el is None else (el.text or "").strip()


def parse_max(text: str, limit: int) -> int:
    """A ``<max/>``: a non-negative integer (xs:int in the schema, §9), capped
    at ``limit``; ``<bad-request/>`` otherwise."""
    if not text.isdigit() or not text.isascii():
        raise StanzaError("bad-request", f"<max/> must be a non-negative integer, not {text!r}"
                                         " (XEP-0059 §2.1)")
    # Past ten digits it is over any limit (and int() of a huge string is slow).
    return limit if len(text) > 10 else min(int(text), limit)


def parse_set(el: Element | None, *, default: int, limit: int) -> Rsm:
    """The request's ``<set xmlns='http://jabber.org/protocol/rsm'/>`` (None
    when the request has none): a page of ``default`` items by default, never
    more than ``limit``. Elements a request does not carry (``<first/>``,
    ``<count/>``...) are ignored."""
    if el is None:
        return Rsm(max=min(default, limit))
    if el.find(f"{{{NS}}}index") is not None:
        raise StanzaError("feature-not-implemented",
                          "paging by <index/> is not supported: page with <after/> and"
                          " <before/> (XEP-0059 §2.6)")
    max_text = _text(el.find(f"{{{NS}}}max"))
    size = min(default, limit) if max_text is None else parse_max(max_text, limit)
    after = _text(el.find(f"{{{NS}}}after"))
    before = _text(el.find(f"{{{NS}}}before"))
    if after == "":
        raise StanzaError("bad-request", "<after/> must hold the UID of an item (XEP-0059 §2.2)")
    if after is not None and before is not None:
        raise StanzaError("bad-request",
                          "<after/> and <before/> together are undefined; ask for a range with"
                          " the after-id and before-id fields (XEP-0313 §4.3.2)")
    return Rsm(max=size, after=after, before=before)


def set_element(first: str | None = None, last: str | None = None, count: int | None = None,
                index: int | None = None) -> Element:
    """The ``<set/>`` of a result page: ``first``/``last`` the UIDs of its
    first and last items (both or neither: an empty page has none, §2.2),
    ``count`` the size of the whole result set, ``index`` the position of
    ``first`` in it."""
    if (first is None) != (last is None):
        raise ValueError("a page has both a first and a last item, or neither")
    s = element(NS, "set")
    if first is not None and last is not None:
        f = child(s, NS, "first", first)
        if index is not None:
            f.set("index", str(index))
        child(s, NS, "last", last)
    if count is not None:
        child(s, NS, "count", str(count))
    return s


def trim(rows: Sequence[T], rsm: Rsm) -> tuple[list[T], bool]:
    """A page out of what the store read for ``rsm``: up to ``rsm.max + 1``
    rows from the cursor on, in reading order (oldest first, or newest first
    when ``rsm.backward``). Returns the page in chronological order and
    whether it is complete: no row was left beyond it (the extra row read is
    how that is known without counting the whole set)."""
    page = list(rows[:rsm.max])
    if rsm.backward:
        page.reverse()
    return page, len(rows) <= rsm.max
