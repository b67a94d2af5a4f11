"""JIDs per RFC 7622: parsing, PRECIS preparation, comparison.

A JID is a frozen value object; parsing is cached because the same few
thousand addresses are prepared again and again on a busy server.
"""

from __future__ import annotations

import functools
import ipaddress
import unicodedata
from dataclasses import dataclass, field

from precis_i18n import get_profile

_LOCAL = get_profile("UsernameCaseMapped")
_RESOURCE = get_profile("OpaqueString")
# RFC 7622 §3.3.1: characters the localpart may not hold even after PRECIS.
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX = 1023  # bytes, per part (RFC 7622 §3.2-3.4)


class JIDError(ValueError):
    """The string is not a valid JID; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class JID:
    """A prepared JID. Use :meth:`parse`; the constructor trusts its input."""

    local: str
    domain: str
    resource: str = ""
    # The bare JID of a full one, made once: routing asks for it several
    # times per stanza (issue 17: ~1 µs and a new object each time).
    _bare: JID | None = field(default=None, init=False, repr=False, compare=False)

    @staticmethod
    def parse(text: str) -> JID:
        """Prepare ``text`` per RFC 7622, raising :class:`JIDError`."""
        return _parse(text)

    @property
    def bare(self) -> JID:
        if not self.resource:
            return self
        bare = self._bare
        if bare is None:
            bare = JID(self.local, self.domain)
            object.__setattr__(self, "_bare", bare)
        return bare

    @property
    def is_bare(self) -> bool:
        return not self.resource

    @property
    def is_domain(self) -> bool:
        return not self.local and not self.resource

    def with_resource(self, resource: str) -> JID:
        """This JID's bare form with ``resource`` (prepared) appended."""
        return _parse(f"{self.local}@{self.domain}/{resource}" if self.local
                      else f"{self.domain}/{resource}")

    def __str__(self) -> str:
        s = f"{self.local}@{self.domain}" if self.local else self.domain
        return f"{s}/{self.resource}" if self.resource else s


def _check_len(part: str, what: str) -> None:
    if not part:
        raise JIDError(f"empty {what}")
    if len(part.encode()) > _MAX:
        raise JIDError(f"{what} longer than {_MAX} bytes")


def prep_domain(domain: str) -> str:
    """Prepare a domainpart: lower case, NFC, IP literals kept (RFC 7622 §3.2)."""
    if domain.endswith("."):
        domain = domain[:-1]
    _check_len(domain, "domainpart")
    if domain.startswith("[") and domain.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(domain[1:-1]).compressed}]"
        except ValueError:
            raise JIDError("domainpart is not a valid IPv6 literal") from None
    domain = unicodedata.normalize("NFC", domain).lower()
    if any(c.isspace() or ord(c) < 0x20 or c in "@/[]" for c in domain):
        raise JIDError("domainpart holds a forbidden character")
    if not domain.isascii():
        try:
            domain.encode("idna")
        except UnicodeError:
            raise JIDError("domainpart is not a valid internationalized domain name") from None
    if any(not label for label in domain.split(".")):
        raise JIDError("domainpart has an empty label")
    return domain


@functools.lru_cache(maxsize=16384)
def _parse(text: str) -> JID:
    local, domain, resource = "", text, ""
    slash = domain.find("/")
    if slash != -1:
        domain, resource = domain[:slash], domain[slash + 1:]
        _check_len(resource, "resourcepart")
        try:
            resource = _RESOURCE.enforce(resource)
        except UnicodeError as exc:
            raise JIDError(f"resourcepart: {exc}") from None
        _check_len(resource, "resourcepart")
    at = domain.find("@")
    if at != -1:
        local, domain = domain[:at], domain[at + 1:]
        _check_len(local, "localpart")
        try:
            local = _LOCAL.enforce(local)
        except UnicodeError as exc:
            raise JIDError(f"localpart: {exc}") from None
        if _LOCAL_FORBIDDEN.intersection(local):
            raise JIDError("localpart holds a character RFC 7622 §3.3.1 forbids")
        _check_len(local, "localpart")
    return JID(local, prep_domain(domain), resource)
