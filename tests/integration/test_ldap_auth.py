"""A host on ``[host.auth] backend = "ldap"`` against a real slapd
(tests/ldapproc.py): slixmpp logs in with the directory's passwords over
PLAIN after TLS, the directory's users exist for delivery, and an LDAP
outage is a ``<temporary-auth-failure/>`` the node recovers from by itself."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DOMAIN, TIMEOUT, Running, free_port, wait_event
from tests.integration.test_operator import vinespy
from tests.ldapproc import PEOPLE, SEARCH_DN, SEARCH_PASSWORD, USERS, SlapdProcess
from tests.rawclient import Raw
from vinespy import ns
from vinespy.jid import JID

pytestmark = [pytest.mark.integration, pytest.mark.ldap]

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"


def ldap_storage(slapd: SlapdProcess, kind: str = "ldap") -> str:
    """The [host.storage] body (fs) followed by a [host.auth] table on ``slapd``:
    ``kind`` ldap (plain), starttls or ldaps (both verifying the test CA)."""
    url = {"ldap": slapd.url, "starttls": slapd.url.replace("127.0.0.1", "localhost"),
           "ldaps": slapd.ldaps_url}[kind]
    tls = f'ca_file = "{slapd.ca_file}"\n' if kind != "ldap" else ""
    return ('backend = "fs"\ndir = "data"\n\n[host.auth]\nbackend = "ldap"\n'
            f'url = "{url}"\nbase = "{PEOPLE}"\nbind_dn = "{SEARCH_DN}"\n'
            f'bind_password = "{SEARCH_PASSWORD}"\ntimeout = 2\n{tls}'
            + ("starttls = true\n" if kind == "starttls" else ""))


async def refused(srv: Running, jid: str, password: str) -> str:
    """The SASL failure condition a slixmpp login of ``jid`` gets."""
    c = srv.client(jid, password)
    failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    c.add_event_handler("failed_auth", lambda s: failed.done() or failed.set_result(
        s["condition"]))
    c.add_event_handler("session_start", lambda _: failed.done() or failed.set_exception(
        AssertionError(f"{jid} logged in")))
    c.connect("127.0.0.1", srv.port)
    try:
        return await asyncio.wait_for(failed, TIMEOUT)
    finally:
        c.abort()


@pytest.mark.parametrize("kind", ["ldap", "starttls", "ldaps"])
async def test_directory_passwords_log_in(make_server: Any, slapd: SlapdProcess,
                                          kind: str) -> None:
    """The directory's password logs in (PLAIN, the only mechanism); a wrong
    one or an unknown user is not-authorized; over ldap://, StartTLS or ldaps://."""
    async with make_server(storage=ldap_storage(slapd, kind)) as srv:
        a = await srv.login(ALICE, USERS["alice"])
        stream = next(iter(srv.server.streams))
        assert stream.mechanism == "PLAIN" and stream.user == JID.parse(ALICE)
        await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        assert await refused(srv, BOB, USERS["alice"]) == "not-authorized"
        assert await refused(srv, f"dinah@{DOMAIN}", "any") == "not-authorized"
        # RFC 4515 §3: the localpart is escaped, so a wildcard finds nobody.
        assert await refused(srv, f"*@{DOMAIN}", USERS["bob"]) == "not-authorized"


async def test_plain_only_and_only_after_tls(make_server: Any, slapd: SlapdProcess) -> None:
    """SCRAM needs stored keys, so an LDAP host offers PLAIN alone, and not on a
    plain-text stream even with tls = "optional" (RFC 6120 §6.3.4, §13.8):
    there STARTTLS is marked required (§5.3.1), and SASL before it is a
    policy-violation."""
    async with make_server(storage=ldap_storage(slapd), client={"tls": "optional"}) as srv:
        raw = await Raw.connect(srv.port)
        raw.open_stream(DOMAIN)
        feats = await raw.features()
        assert b"<required/></starttls>" in feats and b"mechanisms" not in feats
        raw.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>AGFsaWNlAHg=</auth>")
        error = await raw.expect(rb"<stream:error>.*?</stream:error>")
        assert b"<policy-violation" in error.group(0)
        raw.close()
        ctx = ssl.create_default_context()
        srv.ca.configure_trust(ctx)
        raw = await Raw.connect(srv.port)
        feats = await raw.secure(DOMAIN, ctx)
        assert b"<mechanisms" in feats
        assert feats.count(b"<mechanism>") == 1 and b"<mechanism>PLAIN</mechanism>" in feats
        raw.send(f"<auth xmlns='{ns.SASL}' mechanism='SCRAM-SHA-256'>"
                 f"biwsbj1hbGljZSxyPTEyMzQ=</auth>")
        assert b"<invalid-mechanism/>" in (await raw.expect(rb"<failure.*?</failure>")).group(0)
        assert (await raw.plain("alice", USERS["alice"])).startswith(b"<success")
        raw.close()


async def test_directory_users_exist_for_delivery(make_server: Any, slapd: SlapdProcess,
                                                  tmp_path: Path) -> None:
    """A message to a directory user who never logged in is kept offline (the
    account exists because LDAP says so) and delivered at login; one to a
    name the directory does not know is service-unavailable (RFC 6121 §8.5.1)."""
    async with make_server(storage=ldap_storage(slapd)) as srv:
        assert not (tmp_path / "data" / DOMAIN / "bob").exists()
        assert await srv.storage.find_user(JID.parse(f"dinah@{DOMAIN}")) is None
        a = await srv.login(ALICE, USERS["alice"])
        a.send_message(mto=BOB, mbody="from the directory", mtype="chat")
        errors: asyncio.Queue[Any] = asyncio.Queue()
        a.add_event_handler("message_error", errors.put_nowait)   # before the send
        a.send_message(mto=f"dinah@{DOMAIN}", mbody="anyone?", mtype="chat")
        e = await asyncio.wait_for(errors.get(), TIMEOUT)
        assert e["error"]["condition"] == "service-unavailable"
        assert e["from"] == f"dinah@{DOMAIN}"
        b = await srv.login(BOB, USERS["bob"])
        m = await wait_event(b, "message")
        assert m["body"] == "from the directory" and m["from"].bare == ALICE
        user = await srv.storage.find_user(JID.parse(BOB))
        assert user is not None and user.credentials == {}      # no keys kept here


async def test_directory_outage_and_recovery(make_server: Any, slapd: SlapdProcess) -> None:
    """slapd stopped under a running server: a login is temporary-auth-failure
    (RFC 6120 §6.5.10) and a logged-in user keeps chatting; slapd back: the
    same login works, without a restart."""
    async with make_server(storage=ldap_storage(slapd)) as srv:
        a = await srv.login(ALICE, USERS["alice"])
        await asyncio.to_thread(slapd.stop)
        assert await refused(srv, BOB, USERS["bob"]) == "temporary-auth-failure"
        a.send_message(mto=ALICE, mbody="still here", mtype="chat")
        assert (await wait_event(a, "message"))["body"] == "still here"
        await asyncio.to_thread(slapd.start)
        b = await srv.login(BOB, USERS["bob"])
        await b.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)


@pytest.mark.parametrize("case", ["unreachable", "refused"])
async def test_start_refuses_a_directory_it_cannot_use(tmp_path: Path, slapd: SlapdProcess,
                                                       case: str) -> None:
    """`vinespy start` binds to LDAP before it listens: a directory that does
    not answer, or refuses the search account, stops it with one line naming
    the URL (never the bind password) and a non-zero status."""
    rc, _, err = await vinespy("init", DOMAIN, cwd=tmp_path)
    assert rc == 0, err
    site = tmp_path / DOMAIN
    config = site / "conf" / "config.toml"
    url = f"ldap://127.0.0.1:{free_port()}" if case == "unreachable" else slapd.url
    password = "wr0ng-s3cret" if case == "refused" else SEARCH_PASSWORD
    auth = (f'[host.auth]\nbackend = "ldap"\nurl = "{url}"\nbase = "{PEOPLE}"\n'
            f'bind_dn = "{SEARCH_DN}"\nbind_password = "{password}"\ntimeout = 2\n\n')
    config.write_text(config.read_text().replace("[client]", auth + "[client]", 1).replace(
        'address = "0.0.0.0"\nport = 5222', f'address = "127.0.0.1"\nport = {free_port()}'))
    rc, _, err = await vinespy("start", cwd=site)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1, (rc, err)
    assert "listening" not in err and password not in err
    assert f"LDAP {url}" in lines[0], lines[0]
    if case == "refused":
        assert f"the search bind as {SEARCH_DN} was refused: invalidCredentials" in lines[0]
