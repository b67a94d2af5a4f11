"""vinespy/auth/ldap.py against a real slapd: password checks, existence and
its cache, DirectoryStorage while the directory is away, and what open()
refuses (a missing base, an unverifiable certificate)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

import pytest
import trustme

from tests.ldapproc import PEOPLE, SEARCH_DN, SEARCH_PASSWORD, USERS, SlapdProcess
from vinespy.auth.ldap import DirectoryStorage, DirectoryUnavailable, LdapDirectory
from vinespy.config import AuthConfig
from vinespy.jid import JID
from vinespy.storage.memory import MemoryStorage

pytestmark = pytest.mark.ldap

DOMAIN = "wonderland.lit"


def jid(local: str) -> JID:
    return JID.parse(f"{local}@{DOMAIN}")


def config(slapd: SlapdProcess, **kw: object) -> AuthConfig:
    base = AuthConfig(backend="ldap", url=slapd.url, base=PEOPLE, bind_dn=SEARCH_DN,
                      bind_password=SEARCH_PASSWORD, timeout=2.0)
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def directory(slapd: SlapdProcess) -> AsyncIterator[LdapDirectory]:
    d = LdapDirectory(config(slapd))
    await d.open()
    try:
        yield d
    finally:
        await d.close()


async def test_check(directory: LdapDirectory) -> None:
    """Right password True; wrong, empty, unknown user or a wildcard False."""
    assert await directory.check(jid("alice"), USERS["alice"])
    assert not await directory.check(jid("alice"), USERS["bob"])
    assert not await directory.check(jid("alice"), "")
    assert not await directory.check(jid("dinah"), USERS["alice"])
    assert not await directory.check(jid("*"), USERS["alice"])


async def test_existence_is_cached(directory: LdapDirectory, slapd: SlapdProcess) -> None:
    """A known answer outlives the directory for cache_ttl; an unknown one
    then is DirectoryUnavailable naming the URL."""
    assert await directory.exists("alice") and not await directory.exists("dinah")
    await asyncio.to_thread(slapd.stop)
    assert await directory.exists("alice") and not await directory.exists("dinah")
    with pytest.raises(DirectoryUnavailable, match=f"^LDAP {slapd.url}: "):
        await directory.exists("bob")
    with pytest.raises(DirectoryUnavailable):
        await directory.check(jid("alice"), USERS["alice"])
    await asyncio.to_thread(slapd.start)
    assert await directory.exists("bob")


async def test_storage_while_the_directory_is_away(directory: LdapDirectory,
                                                   slapd: SlapdProcess) -> None:
    """A directory user's row is made on first need; while LDAP is away a
    user with a row is still found, one without is an error (not "no such
    user", which would bounce their messages)."""
    storage = DirectoryStorage(MemoryStorage(), directory)
    alice = await storage.find_user(jid("alice"))
    assert alice is not None and alice.jid == jid("alice") and alice.credentials == {}
    assert await storage.find_user(jid("dinah")) is None
    assert (await storage.find_contact(jid("alice"), jid("bob"))) is not None
    await asyncio.to_thread(slapd.stop)
    directory.forget("alice")
    assert await storage.find_user(jid("alice")) is not None
    with pytest.raises(DirectoryUnavailable):
        await storage.find_user(jid("carol"))


async def test_first_need_makes_one_row(directory: LdapDirectory) -> None:
    """Many lookups of a new user at once make one row, not one each."""
    inner = MemoryStorage()
    saves: list[JID] = []
    real = inner.save_user

    async def counting(user):  # type: ignore[no-untyped-def]
        saves.append(user.jid)
        await real(user)
    inner.save_user = counting  # type: ignore[method-assign]
    storage = DirectoryStorage(inner, directory)
    users = await asyncio.gather(*(storage.find_user(jid("bob")) for _ in range(5)))
    assert all(u is not None for u in users) and saves == [jid("bob")]


async def test_several_entries_are_nobody(slapd: SlapdProcess) -> None:
    """A filter that finds two entries lets nobody in under that name."""
    d = LdapDirectory(config(slapd, filter="(|(uid={user})(uid=bob))"))
    try:
        assert not await d.check(jid("alice"), USERS["alice"])
        assert not await d.exists("alice")
    finally:
        await d.close()


@pytest.mark.parametrize("case", ["base", "certificate", "password"])
async def test_open_refuses(slapd: SlapdProcess, tmp_path: Path, case: str) -> None:
    """open() fails in one line for a missing search base, a server
    certificate the CA file does not vouch for, a wrong bind password."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    cfg = {"base": config(slapd, base="ou=nobody,dc=wonderland,dc=lit"),
           "certificate": config(slapd, url=slapd.ldaps_url, ca_file=other),
           "password": config(slapd, bind_password="wrong")}[case]
    d = LdapDirectory(cfg)
    try:
        with pytest.raises(DirectoryUnavailable) as info:
            await d.open()
    finally:
        await d.close()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"LDAP {cfg.url}: ")
    assert SEARCH_PASSWORD not in message and "wrong" not in message
    assert {"base": "searching ou=nobody,dc=wonderland,dc=lit failed: noSuchObject",
            "certificate": ": socket ssl wrapping error: [SSL: CERTIFICATE_VERIFY_FAILED]",
            "password": f"the search bind as {SEARCH_DN} was refused: invalidCredentials",
            }[case] in message, message
