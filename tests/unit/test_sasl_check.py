"""PLAIN with an injected password check (a host on LDAP), and the mechanism
list of such a host: PLAIN alone, and only when secure."""

from __future__ import annotations

import pytest

from tests.unit.test_sasl import DOMAIN, USER, Directory
from vinespy.jid import JID
from vinespy.storage import StorageError
from vinespy.stream import sasl
from vinespy.stream.sasl import Challenge, Failure, Success


class Check:
    """A password check over a dict of bare JID -> password; can be made to fail."""

    def __init__(self) -> None:
        self.passwords = {USER: "pencil"}
        self.calls: list[tuple[JID, str]] = []
        self.broken = False

    async def __call__(self, jid: JID, password: str) -> bool:
        self.calls.append((jid, password))
        if self.broken:
            raise StorageError("LDAP ldap://127.0.0.1:1: connection refused")
        return self.passwords.get(jid) == password


def plain(check: Check) -> sasl.Mechanism:
    return sasl.new("PLAIN", DOMAIN, Directory(), check)


@pytest.mark.parametrize("message", [b"\0user\0pencil", b"\0User@Example.COM\0pencil",
                                     b"user@example.com\0user\0pencil"])
async def test_check_decides(message: bytes) -> None:
    """The check gets the prepared bare JID and the password; the stored keys
    are never looked up (the lookup has no user at all)."""
    check = Check()
    assert await plain(check).start(message) == Success(USER)
    assert check.calls == [(USER, "pencil")]


async def test_check_without_initial_response() -> None:
    """An empty challenge first, as without a check."""
    mech = plain(Check())
    assert await mech.start(None) == Challenge(b"")
    assert await mech.step(b"\0user\0pencil") == Success(USER)


@pytest.mark.parametrize("message", [b"\0user\0wrong", b"\0nobody\0pencil",
                                     b"\0user@other.example\0pencil", b"\0us/er\0pencil"])
async def test_check_refuses(message: bytes) -> None:
    """A wrong password or unknown user is not-authorized; a name that is no
    user of this domain never reaches the check."""
    check = Check()
    assert await plain(check).start(message) == Failure("not-authorized")
    assert len(check.calls) == (1 if b"other" not in message and b"/" not in message else 0)


async def test_check_authzid_mismatch() -> None:
    """An authzid other than the authenticated user is invalid-authzid."""
    result = await plain(Check()).start(b"juliet@example.com\0user\0pencil")
    assert isinstance(result, Failure) and result.condition == "invalid-authzid"


async def test_check_unavailable() -> None:
    """A check that cannot answer (StorageError) is temporary-auth-failure
    (RFC 6120 §6.5.10): try again later, not "wrong password"."""
    check = Check()
    check.broken = True
    assert await plain(check).start(b"\0user\0pencil") == Failure(
        "temporary-auth-failure", "the account directory is unavailable")


def test_only_plain_with_a_check() -> None:
    """Without stored keys there is no SCRAM: offered() lists PLAIN alone and
    only when secure, and new() refuses SCRAM when given a check."""
    assert sasl.offered(True, scram=False) == ["PLAIN"]
    assert sasl.offered(False, scram=False) == []
    for name in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        with pytest.raises(KeyError):
            sasl.new(name, DOMAIN, Directory(), Check())
