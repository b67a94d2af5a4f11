"""XEP-0115 Entity Capabilities: the ``<c/>`` of a presence and the
verification string, without I/O.

* :func:`parse`: the ``<c xmlns='http://jabber.org/protocol/caps' hash node
  ver/>`` of a presence. Only hashed caps count (§5): the legacy form
  without 'hash' (the "Legacy Format" of versions before 1.4) names no
  content, so it cannot be cached by ``ver`` and is treated as unknown, and
  so is a 'hash' this server does not compute (§5.4: a processing entity
  that cannot check the hash does not cache what it is told) or a 'ver'
  that is not the base64 of a digest of that function (it could never
  verify: no query is spent on it).
* :func:`verification_string`: the string S of §5.1 built from a
  disco#info ``<query/>``: identities sorted by category, type, xml:lang,
  name, each as ``category/type/lang/name<``; features sorted, each
  ``var<``; XEP-0128 extended forms sorted by FORM_TYPE, each ``FORM_TYPE<``
  then its other fields by var, each ``var<`` and its values sorted, each
  ``value<``. Sorting is by code point ("i;octet" of the UTF-8 bytes is the
  same order). §5.4 step 3's rules: two identities alike, two features
  alike, two forms with one FORM_TYPE, or a FORM_TYPE with differing values
  make the whole answer ill-formed (:class:`Invalid`), and so does a '<'
  in any category, type, xml:lang, name, feature, FORM_TYPE, field var or
  value ('<' separates the parts of S: "Security Considerations", the
  pre-image attacks); a form whose
  FORM_TYPE field is not ``hidden`` is left out, and so is a form without
  FORM_TYPE (it is no XEP-0128 form).
* :func:`verify`: the features of a disco#info answer when its hash is the
  'ver' it came for (§5.4 steps 4-7), else None: an answer that does not
  hash to 'ver' is never trusted ("Caps Poisoning"). Identities are sorted
  as §5.1 says; a client that sorted the joined ``category/type/lang/name``
  strings instead (slixmpp, Prosody) differs only when one category or type
  is a prefix of another, and is accepted too, its S being an equally
  deterministic function of the content.

Hash functions go by their IANA "Hash Function Textual Names" (§5: the
'hash' attribute): sha-1 (what every client sends, §5 "SHOULD"), sha-224,
sha-256, sha-384, sha-512; not md2/md5, whose weakness would let a client
craft an answer for another's 'ver'.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Iterable

from .. import ns
from ..xml import Element

CAPS = "http://jabber.org/protocol/caps"
C = f"{{{CAPS}}}c"
DATA = "jabber:x:data"

# IANA textual name -> hashlib name.
HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256",
          "sha-384": "sha384", "sha-512": "sha512"}

_IDENTITY = f"{{{ns.DISCO_INFO}}}identity"
_FEATURE = f"{{{ns.DISCO_INFO}}}feature"
_FORM = f"{{{DATA}}}x"
_FIELD = f"{{{DATA}}}field"
_VALUE = f"{{{DATA}}}value"
_LANG = f"{{{ns.XML}}}lang"


class Invalid(ValueError):
    """The disco#info answer is ill-formed for caps (§5.4 step 3)."""


@dataclass(frozen=True)
class Caps:
    """A hashed ``<c/>``: ``hash`` is the IANA name, ``ver`` the base64 digest."""

    hash: str
    node: str
    ver: str

    @property
    def key(self) -> tuple[str, str]:
        """What its features are cached under (content-addressed: the "Caching" note)."""
        return (self.hash, self.ver)

    @property
    def disco_node(self) -> str:
        """The node the disco#info query names ("Discovering Capabilities": ``node#ver``)."""
        return f"{self.node}#{self.ver}"


def parse(presence: Element) -> Caps | None:
    """The hashed caps of ``presence``; None without a ``<c/>``, with a
    legacy one (no 'hash'), an unknown hash or a 'ver' that is not one of
    its digests."""
    c = presence.find(C)
    if c is None:
        return None
    algo, node, ver = c.get("hash"), c.get("node"), c.get("ver")
    if algo is None or node is None or ver is None or not node:
        return None
    algo = algo.lower()
    name = HASHES.get(algo)
    if name is None:
        return None
    try:
        digest = base64.b64decode(ver, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(digest) != hashlib.new(name).digest_size:
        return None
    return Caps(algo, node, ver)


def _clean(*texts: str) -> None:
    """:class:`Invalid` if a text holds '<', the separator of S: else
    features {a, b} and the one feature "a<b" (or an identity's name
    swallowing the next feature, a form field its value...) build the same
    S, so one client's answer would verify for another's 'ver' (the
    pre-image attacks of XEP-0115's "Security Considerations")."""
    for text in texts:
        if "<" in text:
            raise Invalid(f"{text[:60]!r} holds '<', the separator of the verification string")


def _identities(query: Element) -> list[tuple[str, str, str, str]]:
    out = [(el.get("category", ""), el.get("type", ""), el.get(_LANG, ""), el.get("name", ""))
           for el in query.iterfind(_IDENTITY)]
    for ident in out:
        _clean(*ident)
    if len(set(out)) != len(out):
        raise Invalid("two identities with the same category/type/lang/name (§5.4 3.1)")
    return out


def _features(query: Element) -> list[str]:
    out = [el.get("var", "") for el in query.iterfind(_FEATURE)]
    _clean(*out)
    if len(set(out)) != len(out):
        raise Invalid("a feature listed twice (§5.4 3.2)")
    return out


def _forms(query: Element) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """(FORM_TYPE, [(var, values)]) of each XEP-0128 form that counts."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for form in query.iterfind(_FORM):
        form_type: str | None = None
        hidden = False
        fields: list[tuple[str, list[str]]] = []
        for field in form.iterfind(_FIELD):
            var = field.get("var")
            values = [v.text or "" for v in field.iterfind(_VALUE)]
            if var == "FORM_TYPE":
                if form_type is not None or len(set(values)) > 1:
                    raise Invalid("a FORM_TYPE with more than one value (§5.4 3.3)")
                form_type = values[0] if values else ""
                hidden = field.get("type") == "hidden"
            elif var is not None:
                fields.append((var, values))
        if form_type is None or not hidden:
            continue            # no XEP-0128 form / §5.4 3.4: ignored
        _clean(form_type, *(t for var, values in fields for t in (var, *values)))
        if form_type in out:
            raise Invalid(f"two forms of FORM_TYPE {form_type!r} (§5.4 3.3)")
        out[form_type] = fields
    return sorted(out.items())


def verification_string(query: Element, *, joined: bool = False) -> str:
    """S of §5.1 for a disco#info ``<query/>``; :class:`Invalid` if it is
    ill-formed. ``joined``: identities sorted as joined strings."""
    idents = ["/".join(i) for i in sorted(_identities(query))]
    if joined:
        idents.sort()
    parts = [f"{i}<" for i in idents]
    parts += [f"{f}<" for f in sorted(_features(query))]
    for form_type, fields in _forms(query):
        parts.append(f"{form_type}<")
        for var, values in sorted(fields, key=lambda f: f[0]):
            parts.append(f"{var}<")
            parts += [f"{v}<" for v in sorted(values)]
    return "".join(parts)


def hash_string(s: str, algo: str) -> str:
    """base64 of the ``algo`` (IANA name) digest of ``s`` in UTF-8 (§5.1 steps 8-9)."""
    return base64.b64encode(hashlib.new(HASHES[algo], s.encode()).digest()).decode("ascii")


def ver_of(query: Element, algo: str = "sha-1") -> str:
    """The 'ver' a client with this disco#info sends (§5.1)."""
    return hash_string(verification_string(query), algo)


def features(query: Element) -> frozenset[str]:
    """The features a disco#info ``<query/>`` lists."""
    return frozenset(el.get("var", "") for el in query.iterfind(_FEATURE)) - {""}


def verify(caps: Caps, query: Element) -> frozenset[str] | None:
    """The features of ``query`` when it is well-formed and hashes to
    ``caps.ver`` (§5.4), else None."""
    try:
        s = verification_string(query)
        if hash_string(s, caps.hash) == caps.ver:
            return features(query)
        other = verification_string(query, joined=True)
    except Invalid:
        return None
    if other != s and hash_string(other, caps.hash) == caps.ver:
        return features(query)
    return None


def counts(query: Element) -> tuple[int, int, int]:
    """(identities, features, form fields) of a disco#info ``<query/>``: what
    a processing entity bounds before it hashes and keeps one."""
    return (sum(1 for _ in query.iterfind(_IDENTITY)), sum(1 for _ in query.iterfind(_FEATURE)),
            sum(1 for form in query.iterfind(_FORM) for _ in form.iterfind(_FIELD)))


def wants(features: Iterable[str] | None, node: str) -> bool:
    """XEP-0163 §4.3: a client asks for the notifications of ``node`` by
    listing ``node+notify`` among its features."""
    return features is not None and f"{node}+notify" in features
