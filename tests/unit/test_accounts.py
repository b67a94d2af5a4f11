"""Account operations (vinespy.accounts) on the memory backend."""

from __future__ import annotations

import pytest

from vinespy import accounts
from vinespy.accounts import AccountError
from vinespy.jid import JID
from vinespy.storage import Contact, ScramKeys
from vinespy.storage.memory import MemoryStorage
from vinespy.stream import sasl

ALICE = JID.parse("alice@example.com")
FAST = 4096          # the RFC 5802/7677 minimum: small but usable by SCRAM


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


async def test_create_user_default_iterations(storage: MemoryStorage) -> None:
    """create_user stores SCRAM-SHA-1/256 keys at the default 10000 iterations."""
    user = await accounts.create_user(storage, ALICE, "secret")
    stored = await storage.find_user(ALICE)
    assert stored is not None and stored == user
    assert stored.jid == ALICE and stored.roster == {}
    assert {k: v.iterations for k, v in stored.credentials.items()} == {
        "SCRAM-SHA-1": 10000, "SCRAM-SHA-256": 10000}
    assert sasl.verify_password(stored.credentials, "secret")


async def test_create_user_duplicate(storage: MemoryStorage) -> None:
    """Creating an existing account is an AccountError and keeps the old password."""
    await accounts.create_user(storage, ALICE, "secret", FAST)
    with pytest.raises(AccountError, match="already exists"):
        await accounts.create_user(storage, JID.parse("ALICE@example.com"), "other", FAST)
    assert await accounts.authenticate(storage, ALICE, "secret") is not None


@pytest.mark.parametrize("jid", ["example.com", "alice@example.com/phone"])
async def test_create_user_needs_bare_user_jid(storage: MemoryStorage, jid: str) -> None:
    """A domain or full JID is refused with a one-line AccountError."""
    with pytest.raises(AccountError) as info:
        await accounts.create_user(storage, JID.parse(jid), "secret", FAST)
    assert "\n" not in str(info.value)
    assert await storage.find_user(JID.parse(jid)) is None


@pytest.mark.parametrize("password, iterations", [("", FAST), ("secret", 100)])
async def test_create_user_bad_password_or_iterations(storage: MemoryStorage, password: str,
                                                      iterations: int) -> None:
    """An empty password or too few iterations is an AccountError; nothing is stored."""
    with pytest.raises(AccountError):
        await accounts.create_user(storage, ALICE, password, iterations)
    assert await storage.find_user(ALICE) is None


async def test_set_password(storage: MemoryStorage) -> None:
    """set_password replaces the credentials and keeps the roster."""
    await accounts.create_user(storage, ALICE, "old", FAST)
    user = await storage.find_user(ALICE)
    assert user is not None
    bob = JID.parse("bob@example.com")
    user.roster[bob] = Contact(bob, subscription="both")
    await storage.save_user(user)
    await accounts.set_password(storage, ALICE, "new", FAST)
    assert await accounts.authenticate(storage, ALICE, "old") is None
    again = await accounts.authenticate(storage, ALICE, "new")
    assert again is not None and bob in again.roster


async def test_set_password_unknown_user(storage: MemoryStorage) -> None:
    """set_password for a missing account is an AccountError."""
    with pytest.raises(AccountError, match="no such user"):
        await accounts.set_password(storage, ALICE, "new", FAST)


async def test_delete_user(storage: MemoryStorage) -> None:
    """delete_user removes the account; a second delete is an AccountError."""
    await accounts.create_user(storage, ALICE, "secret", FAST)
    await accounts.delete_user(storage, ALICE)
    assert await storage.find_user(ALICE) is None
    with pytest.raises(AccountError, match="no such user"):
        await accounts.delete_user(storage, ALICE)


async def test_authenticate(storage: MemoryStorage) -> None:
    """authenticate returns the user for the right password, a full JID is reduced."""
    await accounts.create_user(storage, ALICE, "secret", FAST)
    user = await accounts.authenticate(storage, JID.parse("alice@example.com/phone"), "secret")
    assert user is not None and user.jid == ALICE
    assert await accounts.authenticate(storage, ALICE, "Secret") is None
    assert await accounts.authenticate(storage, ALICE, "") is None


async def test_authenticate_unknown_user_costs_a_derivation(
        storage: MemoryStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown user or a domain JID is None, after the same dummy key derivation."""
    calls = []
    real = accounts.verify_password

    def spy(credentials: dict[str, ScramKeys], password: str) -> bool:
        calls.append(credentials)
        return real(credentials, password)

    monkeypatch.setattr(accounts, "verify_password", spy)
    assert await accounts.authenticate(storage, JID.parse("ghost@example.com"), "x") is None
    assert await accounts.authenticate(storage, JID.parse("example.com"), "x") is None
    assert calls == [{}, {}]


async def test_accounts_work_with_scram(storage: MemoryStorage) -> None:
    """An account created here logs in through a SCRAM-SHA-256 exchange."""
    from scramp import ScramClient

    await accounts.create_user(storage, ALICE, "secret", FAST)
    mech = sasl.new("SCRAM-SHA-256", "example.com", storage.find_user)
    client = ScramClient(["SCRAM-SHA-256"], "alice", "secret")
    first = await mech.start(client.get_client_first().encode())
    assert isinstance(first, sasl.Challenge)
    client.set_server_first(first.data.decode())
    result = await mech.step(client.get_client_final().encode())
    assert isinstance(result, sasl.Success) and result.jid == ALICE
