"""The ``vinespy`` command line: init, accounts, cert, and the server's lifecycle.

Most tests call :func:`vinespy.cli.main` in-process on real files under
``tmp_path``. Those marked ``integration`` run the command as the operator
does, in a subprocess inside a directory made by ``vinespy init``, with the
client port moved to a free loopback port.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.redisproc import redis_server
from vinespy import __version__, accounts, cli
from vinespy.cli import accounts as cli_accounts, run as cli_run
from vinespy.cluster.keys import NODES, node_info
from vinespy.config import ClusterConfig, load
from vinespy.jid import JID
from vinespy.process import pidfile
from vinespy.storage import User, open_storage
from vinespy.storage.pubsub.fs import FsPubSub

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "wonderland.lit"
PASSWORD_LINE = re.compile(r"^\s+(\S+@\S+)\s+password: (\S+)$", re.M)


# --------------------------------------------------------------------------
# helpers

def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``cli.main(argv)`` -> (status, stdout, stderr)."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    """stderr is exactly one ``vinespy: ...`` line holding every fragment."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("vinespy: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def find_user(data_dir: Path, jid: str) -> User | None:
    """The user stored in the fs data dir ``data_dir``."""
    async def go() -> User | None:
        storage = open_storage("fs", {"dir": data_dir})
        try:
            return await storage.find_user(JID.parse(jid))
        finally:
            await storage.close()
    return asyncio.run(go())


def authenticates(data_dir: Path, jid: str, password: str) -> bool:
    """Whether ``password`` is ``jid``'s password in the fs data dir ``data_dir``."""
    async def go() -> bool:
        storage = open_storage("fs", {"dir": data_dir})
        try:
            return await accounts.authenticate(storage, JID.parse(jid), password) is not None
        finally:
            await storage.close()
    return asyncio.run(go())


def password_file(tmp_path: Path, password: str, name: str = "pw") -> str:
    path = tmp_path / name
    path.write_text(f"{password}\n")
    return str(path)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> Path:
    """A directory made by ``vinespy init wonderland.lit``, the current directory."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", DOMAIN]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / DOMAIN)
    return tmp_path / DOMAIN


# --------------------------------------------------------------------------
# global options

def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the package version and exits 0."""
    status, out, _ = run_main(capsys, "--version")
    assert status == 0
    assert out.strip() == f"vinespy {__version__}"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and names every Vines command."""
    status, out, _ = run_main(capsys, "--help")
    assert status == 0
    for command in ("init", "start", "stop", "restart", "status", "cert",
                    "register", "passwd", "unregister"):
        assert command in out


@pytest.mark.parametrize("argv", [["frobnicate"], ["init"], ["start", "--bogus"], []])
def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str],
                                   argv: list[str]) -> None:
    """A usage error exits 2 with one line on stderr, not argparse's usage block."""
    status, _, err = run_main(capsys, *argv)
    assert status == 2
    assert_one_line_error(err, "--help")


def test_config_option_after_the_command(site: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """-c is accepted after the command name as well as before it."""
    monkeypatch.chdir(tmp_path)
    config = str(site / "conf" / "config.toml")
    for argv in (["-c", config, "status"], ["status", "-c", config]):
        status, out, _ = run_main(capsys, *argv)
        assert (status, out) == (3, "vinespy is not running\n")


# --------------------------------------------------------------------------
# init

def test_init_creates_tree_with_private_modes(site: Path) -> None:
    """init makes conf/config.toml (0600), the certificate and data/ log/ pid/ (0700)."""
    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(site / "conf" / "config.toml") == 0o600
    for name in ("data", "log", "pid"):
        assert (site / name).is_dir() and mode(site / name) == 0o700
    assert (site / "conf" / "certs" / f"{DOMAIN}.crt").is_file()
    assert (site / "conf" / "certs" / f"{DOMAIN}.key").is_file()


def test_init_config_cluster_block_loads(site: Path) -> None:
    """The commented [cluster] block init writes loads, uncommented, as the defaults."""
    text = (site / "conf" / "config.toml").read_text()
    uncommented = re.sub(r"^# (\[cluster\]|(?:url|heartbeat|dead_after|route_cache_ttl|"
                         r"inbox_maxlen) = )", r"\1", text, flags=re.M)
    assert uncommented.count("\n[cluster]") == 1
    (site / "conf" / "config.toml").write_text(uncommented)
    config = load("conf/config.toml")
    assert config.cluster == ClusterConfig(node=f"{socket.gethostname()}-5222")
    for key in ("password", "db", "node", "tls_ca"):
        assert f"\n# {key} = " in text


def test_init_config_loads_and_serves_the_domain(site: Path) -> None:
    """The written config loads (certs checked) and keeps accounts in ./data, port 5222."""
    config = load("conf/config.toml")
    assert config.domains == (DOMAIN,)
    host = config.host_for(DOMAIN)
    assert host is not None and host.storage.backend == "fs"
    assert Path(host.storage.options["dir"]).resolve() == (site / "data").resolve()
    assert config.certs == (site / "conf" / "certs").resolve()
    assert config.client.port == 5222


def test_init_users_have_each_other_in_roster(site: Path) -> None:
    """alice and arthur exist, each in the other's roster with subscription both."""
    alice = find_user(site / "data", f"alice@{DOMAIN}")
    arthur = find_user(site / "data", f"arthur@{DOMAIN}")
    assert alice is not None and arthur is not None
    assert list(alice.roster) == [arthur.jid]
    assert list(arthur.roster) == [alice.jid]
    assert alice.roster[arthur.jid].subscription == "both"
    assert arthur.roster[alice.jid].subscription == "both"
    assert alice.roster[arthur.jid].ask is None


def test_init_prints_each_password_once_and_it_authenticates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The two random passwords are printed once each, with how to start, and work."""
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(capsys, "init", DOMAIN)
    assert status == 0 and err == ""
    users = dict(PASSWORD_LINE.findall(out))
    assert set(users) == {f"alice@{DOMAIN}", f"arthur@{DOMAIN}"}
    assert len(set(users.values())) == 2
    for jid, password in users.items():
        assert out.count(password) == 1
        assert authenticates(tmp_path / DOMAIN / "data", jid, password)
        assert not authenticates(tmp_path / DOMAIN / "data", jid, password + "x")
    assert f"cd {DOMAIN} && vinespy start" in out
    assert f"alice@{DOMAIN} (server 127.0.0.1, port 5222" in out


def test_init_prepares_the_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The domain is prepared (RFC 7622): the directory and JIDs are lower case."""
    monkeypatch.chdir(tmp_path)
    status, out, _ = run_main(capsys, "init", "Example.ORG")
    assert status == 0
    assert (tmp_path / "example.org" / "conf" / "config.toml").is_file()
    assert "alice@example.org" in out


def test_init_refuses_an_existing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """init never writes into an existing directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / DOMAIN).mkdir()
    (tmp_path / DOMAIN / "keep").write_text("x")
    status, out, err = run_main(capsys, "init", DOMAIN)
    assert status == 1 and out == ""
    assert_one_line_error(err, DOMAIN, "already exists")
    assert os.listdir(tmp_path / DOMAIN) == ["keep"]


@pytest.mark.parametrize("domain", ["bad domain", "alice@example.org", "a/b", "..",
                                    'a"b', "a\\b", "x-.org", "x_y.org", ""])
def test_init_refuses_a_bad_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str], domain: str) -> None:
    """A domain that is no valid JID host name is refused, and nothing is created."""
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(capsys, "init", domain)
    assert status == 1 and out == ""
    assert_one_line_error(err)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------
# register, passwd, unregister

def test_register_with_password_file(site: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """register creates the account with the first line of --password-file."""
    pw = password_file(tmp_path, "tea party\nsecond line ignored")
    status, out, err = run_main(capsys, "register", f"hatter@{DOMAIN}", "--password-file", pw)
    assert (status, err) == (0, "")
    assert f"hatter@{DOMAIN}" in out
    assert authenticates(site / "data", f"hatter@{DOMAIN}", "tea party")


def test_register_password_from_stdin(site: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--password-file - reads the password from standard input."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("from-stdin\r\n"))
    status, _, _ = run_main(capsys, "register", f"Hatter@{DOMAIN}", "--password-file", "-")
    assert status == 0
    assert authenticates(site / "data", f"hatter@{DOMAIN}", "from-stdin")


def test_register_asks_twice(site: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """Without --password-file the password is asked twice (getpass)."""
    answers = iter(["s3cret", "s3cret"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(cli_accounts.getpass, "getpass", fake_getpass)
    status, _, _ = run_main(capsys, "register", f"hatter@{DOMAIN}")
    assert status == 0 and len(prompts) == 2
    assert authenticates(site / "data", f"hatter@{DOMAIN}", "s3cret")


def test_register_refuses_mismatched_passwords(site: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Two different answers to the prompts create nothing."""
    answers = iter(["one", "two"])
    monkeypatch.setattr(cli_accounts.getpass, "getpass", lambda prompt="": next(answers))
    status, _, err = run_main(capsys, "register", f"hatter@{DOMAIN}")
    assert status == 1
    assert_one_line_error(err, "do not match")
    assert find_user(site / "data", f"hatter@{DOMAIN}") is None


@pytest.mark.parametrize("content", ["", "\n", "\nsecond"])
def test_register_refuses_an_empty_password(site: Path, tmp_path: Path, content: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An empty first line is no password."""
    pw = tmp_path / "pw"
    pw.write_text(content)
    status, _, err = run_main(capsys, "register", f"hatter@{DOMAIN}", "--password-file", str(pw))
    assert status == 1
    assert_one_line_error(err, "empty")
    assert find_user(site / "data", f"hatter@{DOMAIN}") is None


def test_register_missing_password_file(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable password file is one line naming it."""
    status, _, err = run_main(capsys, "register", f"hatter@{DOMAIN}",
                              "--password-file", "nope.txt")
    assert status == 1
    assert_one_line_error(err, "nope.txt")


def test_register_refuses_a_duplicate(site: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Registering an existing account fails and keeps its password."""
    pw = password_file(tmp_path, "other")
    status, _, err = run_main(capsys, "register", f"alice@{DOMAIN}", "--password-file", pw)
    assert status == 1
    assert_one_line_error(err, f"alice@{DOMAIN}")
    assert not authenticates(site / "data", f"alice@{DOMAIN}", "other")


@pytest.mark.parametrize("command", ["register", "passwd", "unregister"])
def test_account_commands_refuse_a_foreign_domain(site: Path, tmp_path: Path, command: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A JID of a domain the config does not serve is refused before any prompt."""
    extra = [] if command == "unregister" else ["--password-file", password_file(tmp_path, "x")]
    status, _, err = run_main(capsys, command, "hatter@example.org", *extra)
    assert status == 1
    assert_one_line_error(err, "example.org is not served here")


@pytest.mark.parametrize("jid", ["@wonderland.lit", "a@b@wonderland.lit", f"hatter@{DOMAIN}/tea",
                                 DOMAIN, "hat ter@wonderland.lit", ""])
def test_account_commands_refuse_a_bad_jid(site: Path, tmp_path: Path, jid: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed JID, a full JID or a bare domain is refused in one line."""
    status, _, err = run_main(capsys, "register", jid,
                              "--password-file", password_file(tmp_path, "x"))
    assert status == 1
    assert_one_line_error(err)


@pytest.mark.parametrize("command", ["register", "passwd"])
def test_register_and_passwd_refuse_an_ldap_host(site: Path, tmp_path: Path, command: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """On a host whose passwords are in LDAP, register and passwd refuse in one
    line naming the directory, before any prompt and without touching it."""
    config = site / "conf" / "config.toml"
    config.write_text(config.read_text().replace("[client]", (
        '[host.auth]\nbackend = "ldap"\nurl = "ldap://ldap.wonderland.lit:389"\n'
        'base = "ou=people,dc=wonderland,dc=lit"\nbind_password = "hunter2"\n\n[client]'), 1))
    status, _, err = run_main(capsys, command, f"hatter@{DOMAIN}")
    assert status == 1
    assert_one_line_error(err, f"{DOMAIN} checks passwords in LDAP "
                          "(ldap://ldap.wonderland.lit:389)", f"not with vinespy {command}")
    assert "hunter2" not in err
    assert find_user(site / "data", f"hatter@{DOMAIN}") is None


def test_passwd_changes_the_password(site: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """passwd replaces the password: the old one no longer authenticates."""
    pw = password_file(tmp_path, "new one")
    status, _, err = run_main(capsys, "passwd", f"alice@{DOMAIN}", "--password-file", pw)
    assert (status, err) == (0, "")
    assert authenticates(site / "data", f"alice@{DOMAIN}", "new one")
    alice = find_user(site / "data", f"alice@{DOMAIN}")
    assert alice is not None and len(alice.roster) == 1      # the roster survives


def test_passwd_and_unregister_need_an_existing_user(site: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """passwd and unregister of an unknown user fail in one line."""
    pw = password_file(tmp_path, "x")
    status, _, err = run_main(capsys, "passwd", f"nobody@{DOMAIN}", "--password-file", pw)
    assert status == 1
    assert_one_line_error(err, f"nobody@{DOMAIN}")
    status, _, err = run_main(capsys, "unregister", f"nobody@{DOMAIN}")
    assert status == 1
    assert_one_line_error(err, f"nobody@{DOMAIN}")


def test_unregister_deletes_the_account(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """unregister removes the account from storage."""
    status, out, _ = run_main(capsys, "unregister", f"arthur@{DOMAIN}")
    assert status == 0 and f"arthur@{DOMAIN}" in out
    assert find_user(site / "data", f"arthur@{DOMAIN}") is None


def test_unregister_deletes_the_accounts_pep_nodes(site: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """unregister removes the account's XEP-0163 nodes from the pubsub store
    the server uses (fs here), and no one else's."""
    store = FsPubSub(site / "data" / "pubsub")

    async def make() -> None:
        for owner in (f"arthur@{DOMAIN}", f"alice@{DOMAIN}"):
            for node in ("urn:xmpp:avatar:metadata", "storage:bookmarks"):
                assert await store.create(owner, node, owner, {})

    asyncio.run(make())
    status, _, _ = run_main(capsys, "unregister", f"arthur@{DOMAIN}")
    assert status == 0
    assert asyncio.run(store.nodes(f"arthur@{DOMAIN}")) == []
    assert len(asyncio.run(store.nodes(f"alice@{DOMAIN}"))) == 2


def test_account_commands_report_a_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A missing or invalid config is one line, no traceback."""
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(capsys, "unregister", f"alice@{DOMAIN}")
    assert status == 1
    assert_one_line_error(err)
    bad = tmp_path / "bad.toml"
    bad.write_text("log = [unclosed\n")
    status, _, err = run_main(capsys, "-c", str(bad), "unregister", f"alice@{DOMAIN}")
    assert status == 1
    assert_one_line_error(err, "bad.toml")


# --------------------------------------------------------------------------
# cert

def test_cert_refuses_to_overwrite_without_force(site: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """cert keeps an existing certificate unless --force is given."""
    crt = site / "conf" / "certs" / f"{DOMAIN}.crt"
    before = crt.read_bytes()
    status, _, err = run_main(capsys, "cert", DOMAIN)
    assert status == 1
    assert_one_line_error(err, "--force")
    assert crt.read_bytes() == before
    status, out, _ = run_main(capsys, "cert", DOMAIN, "--force")
    assert status == 0 and str(crt) in out
    assert crt.read_bytes() != before


def test_cert_writes_into_the_configured_certs_dir(site: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A new domain's certificate lands in the config's certs directory."""
    status, out, _ = run_main(capsys, "cert", "tea.wonderland.lit")
    assert status == 0
    for suffix in ("crt", "key"):
        path = site / "conf" / "certs" / f"tea.wonderland.lit.{suffix}"
        assert path.is_file() and str(path) in out


@pytest.mark.parametrize(("argv", "key_class"), [
    ((), ec.EllipticCurvePublicKey),
    (("--key-type", "ecdsa"), ec.EllipticCurvePublicKey),
    (("--key-type", "rsa"), rsa.RSAPublicKey),
])
def test_cert_key_type(site: Path, capsys: pytest.CaptureFixture[str],
                       argv: tuple[str, ...], key_class: type) -> None:
    """init's certificate is ECDSA (P-256); cert makes ECDSA unless --key-type rsa,
    and the config loads with either (the load checks that the pair serves)."""
    crt = site / "conf" / "certs" / f"{DOMAIN}.crt"
    made_by_init = x509.load_pem_x509_certificate(crt.read_bytes()).public_key()
    assert isinstance(made_by_init, ec.EllipticCurvePublicKey)
    assert made_by_init.curve.name == "secp256r1"
    status, _, _ = run_main(capsys, "cert", DOMAIN, "--force", *argv)
    assert status == 0
    assert isinstance(x509.load_pem_x509_certificate(crt.read_bytes()).public_key(), key_class)
    assert load(site / "conf" / "config.toml").host_for(DOMAIN) is not None


def test_cert_refuses_an_unknown_key_type(site: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--key-type takes ecdsa or rsa only; the certificate is left alone."""
    crt = site / "conf" / "certs" / f"{DOMAIN}.crt"
    before = crt.read_bytes()
    status, _, err = run_main(capsys, "cert", DOMAIN, "--force", "--key-type", "dsa")
    assert status == 2 and "ecdsa" in err
    assert crt.read_bytes() == before


def test_cert_without_config_uses_conf_certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Without a config, cert writes ./conf/certs/DOMAIN.crt and .key."""
    monkeypatch.chdir(tmp_path)
    status, _, _ = run_main(capsys, "cert", "example.org")
    assert status == 0
    assert (tmp_path / "conf" / "certs" / "example.org.crt").is_file()
    assert (tmp_path / "conf" / "certs" / "example.org.key").is_file()


def test_cert_refuses_a_bad_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """cert validates the domain like init."""
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(capsys, "cert", "not a domain")
    assert status == 1
    assert_one_line_error(err)
    assert not (tmp_path / "conf").exists()


# --------------------------------------------------------------------------
# status and stop without a running server, and the pid file rules

@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line says vinespy, standing in for a server."""
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()", "vinespy"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not vinespy (its pid reused after a reboot, say)."""
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    yield proc
    proc.kill()
    proc.wait()


def test_status_and_stop_when_not_running(site: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """status exits 3 and stop exits 1 "not running" when no server runs."""
    status, out, _ = run_main(capsys, "status")
    assert (status, out) == (3, "vinespy is not running\n")
    status, _, err = run_main(capsys, "stop")
    assert status == 1
    assert err == "vinespy: not running\n"


def test_stop_removes_a_stale_pid_file(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pid file naming a dead process is stale: stop says not running and removes it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass", "vinespy"])
    dead.wait()
    pid_file = site / "pid" / "vinespy.pid"
    pid_file.write_text(f"{dead.pid}\n")
    status, _, _ = run_main(capsys, "status")
    assert status == 3 and pid_file.exists()        # status only looks
    status, _, err = run_main(capsys, "stop")
    assert (status, err) == (1, "vinespy: not running\n")
    assert not pid_file.exists()


def test_garbage_pid_file_is_stale(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pid file that holds no pid is stale too."""
    pid_file = site / "pid" / "vinespy.pid"
    pid_file.write_text("not a pid\n")
    assert run_main(capsys, "stop")[0] == 1
    assert not pid_file.exists()


def test_status_start_stop_with_a_live_pid(site: Path, sleeper: subprocess.Popen[bytes],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A live vinespy in the pid file: status 0, start refuses, stop SIGTERMs it."""
    pid_file = site / "pid" / "vinespy.pid"
    pid_file.write_text(f"{sleeper.pid}\n")
    status, out, _ = run_main(capsys, "status")
    assert (status, out) == (0, f"vinespy is running (pid {sleeper.pid})\n")
    status, _, err = run_main(capsys, "start", "-d")
    assert status == 1
    assert err == f"vinespy: already running (pid {sleeper.pid})\n"
    status, out, _ = run_main(capsys, "stop")
    assert status == 0 and str(sleeper.pid) in out
    assert sleeper.wait(timeout=5) == -signal.SIGTERM
    assert not pid_file.exists()


def test_restart_with_a_bad_config_keeps_the_server(
        site: Path, sleeper: subprocess.Popen[bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    """restart checks the config before stopping anything."""
    (site / "pid" / "vinespy.pid").write_text(f"{sleeper.pid}\n")
    config = site / "conf" / "config.toml"
    config.write_text(config.read_text().replace('log = "info"', 'log = "loud"'))
    status, _, err = run_main(capsys, "restart")
    assert status == 1
    assert_one_line_error(err, "log")
    assert sleeper.poll() is None
    assert run_main(capsys, "status")[0] == 0


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_pid_of_another_program_is_stale(site: Path, stranger: subprocess.Popen[bytes],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A pid file naming some other live program is stale: stop never signals it."""
    pid_file = site / "pid" / "vinespy.pid"
    pid_file.write_text(f"{stranger.pid}\n")
    assert run_main(capsys, "status")[0] == 3
    assert run_main(capsys, "stop")[0] == 1
    assert stranger.poll() is None and not pid_file.exists()


def test_status_outside_a_server_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Without conf/config.toml, status exits 4 (unknown) and stop 1, in one line."""
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(capsys, "status")
    assert status == 4
    assert_one_line_error(err, "conf/config.toml", "vinespy init")
    status, _, err = run_main(capsys, "stop")
    assert status == 1
    assert_one_line_error(err, "conf/config.toml")


def test_start_reports_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """start with an invalid config exits 1 with one line and writes no pid file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.toml").write_text('log = "loud"\n')
    status, _, err = run_main(capsys, "start", "-d")
    assert status == 1
    assert_one_line_error(err, "log")
    assert not (tmp_path / "pid").exists()


def test_run_paths_sit_beside_conf(tmp_path: Path) -> None:
    """log/ and pid/ sit beside conf/, or beside a config kept elsewhere."""
    paths = pidfile.RunPaths.for_config(tmp_path / "site" / "conf" / "config.toml")
    assert paths.pid_file == tmp_path / "site" / "pid" / "vinespy.pid"
    assert paths.log_file == tmp_path / "site" / "log" / "vinespy.log"
    paths = pidfile.RunPaths.for_config(tmp_path / "etc" / "vinespy.toml")
    assert paths.pid_file == tmp_path / "etc" / "pid" / "vinespy.pid"


# --------------------------------------------------------------------------
# --workers: argument errors

def add_cluster(site: Path, table: str = "") -> None:
    """Append a [cluster] table to the site's config."""
    config = site / "conf" / "config.toml"
    config.write_text(config.read_text() + f"\n[cluster]\n{table}")


def test_workers_need_a_cluster(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--workers 2 without a [cluster] table exits 1 in one line, starting nothing."""
    for argv in (["start", "--workers", "2"], ["start", "-d", "--workers", "2"],
                 ["restart", "--workers", "2"]):
        status, out, err = run_main(capsys, *argv)
        assert (status, out) == (1, "")
        assert err == ("vinespy: --workers 2 needs a [cluster] table in conf/config.toml: "
                       "workers are cluster nodes sharing the ports through Redis\n")
    assert list((site / "pid").iterdir()) == []


@pytest.mark.parametrize("value", ["0", "65", "-1", "two", "1.5", ""])
def test_workers_out_of_range(site: Path, capsys: pytest.CaptureFixture[str],
                              value: str) -> None:
    """--workers takes an integer from 1 to 64; anything else is a usage error (exit 2)."""
    add_cluster(site)
    for command in ("start", "restart"):
        status, out, err = run_main(capsys, command, "--workers", value)
        assert (status, out) == (2, "")
        assert_one_line_error(err, "--workers", "expected an integer from 1 to 64",
                              f"got {value!r}")
    assert list((site / "pid").iterdir()) == []


def test_workers_bounds_are_accepted() -> None:
    """1 and 64 are valid worker counts; the default is 1 (start) or unset (restart)."""
    parser = cli.build_parser()
    assert parser.parse_args(["start"]).workers == 1
    assert parser.parse_args(["start", "--workers", "1"]).workers == 1
    assert parser.parse_args(["start", "--workers", "64"]).workers == 64
    assert parser.parse_args(["restart"]).workers is None


def test_one_worker_needs_no_cluster(site: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--workers 1 is plain start: the config as loaded, in this process, no supervisor."""
    seen: list[tuple[object, int]] = []

    def fake_serve(config: object, ready: object, workers: int = 1) -> int:
        seen.append((config, workers))
        return 0

    monkeypatch.setattr(cli_run, "serve", fake_serve)
    status, _, err = run_main(capsys, "start", "--workers", "1")
    assert (status, err) == (0, "")
    assert seen == [(load("conf/config.toml"), 1)]
    assert not (site / "pid" / "vinespy.pid").exists()


# --------------------------------------------------------------------------
# status of a cluster, against a real redis-server (tests/redisproc.py)


def register_nodes(client: redis.Redis, beats_ago: dict[str, float],
                   infos: dict[str, dict[str, object]]) -> None:
    """Write the node registry as nodes do: heartbeats in ms of Redis TIME."""
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    client.hset(NODES, mapping={node: int(now_ms - ago * 1000)
                                for node, ago in beats_ago.items()})
    for node, info in infos.items():
        client.hset(node_info(node), mapping=info)   # type: ignore[arg-type]


LINE = re.compile(r"^node (\S+)  (alive|dead)  sessions (\d+)  pid (\S+)  host (\S+)  "
                  r"heartbeat (\d+\.\d) s ago$")


def test_status_lists_the_cluster_nodes(site: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """status prints one line per registered node, alive or dead by dead_after,
    ages measured on Redis's clock; the exit status stays the local one."""
    with redis_server(tmp_path) as client:
        port = client.connection_pool.connection_kwargs["port"]
        add_cluster(site, f'url = "redis://127.0.0.1:{port}/0"\ndead_after = 5\n')
        register_nodes(client, {"myhost-5222-w0": 0.4, "myhost-5222-w1": 60, "ghost": 4},
                       {"myhost-5222-w0": {"pid": 4242, "host": "myhost", "sessions": 12,
                                           "started": 1, "incarnation": "x"},
                        "myhost-5222-w1": {"pid": 4243, "host": "otherhost", "sessions": 0}})
        status, out, err = run_main(capsys, "status")
    assert (status, err) == (3, "")
    lines = out.splitlines()
    assert lines[:2] == ["vinespy is not running",
                         f"cluster redis://127.0.0.1:{port}/0: 3 nodes, 2 alive"]
    rows = [LINE.match(line) for line in lines[2:]]
    assert all(rows), lines
    got = {m[1]: m.groups()[1:] for m in rows if m}
    assert list(got) == ["ghost", "myhost-5222-w0", "myhost-5222-w1"]      # sorted
    assert got["ghost"][:4] == ("alive", "0", "-", "-")
    assert got["myhost-5222-w0"][:4] == ("alive", "12", "4242", "myhost")
    assert got["myhost-5222-w1"][:4] == ("dead", "0", "4243", "otherhost")
    assert 0.4 <= float(got["myhost-5222-w0"][4]) < 5
    assert 60 <= float(got["myhost-5222-w1"][4]) < 65


def test_status_with_password_and_db(site: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """[cluster] password and db reach Redis; the password is never shown."""
    with redis_server(tmp_path, password="hunter2") as client:
        port = client.connection_pool.connection_kwargs["port"]
        add_cluster(site, f'url = "redis://127.0.0.1:{port}"\npassword = "hunter2"\ndb = 3\n')
        db3 = redis.Redis(host="127.0.0.1", port=port, password="hunter2", db=3)
        try:
            register_nodes(db3, {"n-w0": 0}, {"n-w0": {"pid": 7, "host": "h", "sessions": 2}})
        finally:
            db3.close()
        status, out, _ = run_main(capsys, "status")
        config = site / "conf" / "config.toml"
        config.write_text(config.read_text().replace('"hunter2"', '"wrong"'))
        status2, out2, _ = run_main(capsys, "status")
    lines = out.splitlines()
    assert status == 3 and len(lines) == 3
    assert lines[1] == f"cluster redis://127.0.0.1:{port}: 1 node, 1 alive"
    assert re.match(r"node n-w0  alive  sessions 2  pid 7  host h  heartbeat 0\.\d s ago$",
                    lines[2]), out
    assert status2 == 3
    assert out2.splitlines()[1].startswith(f"cluster: cannot reach redis://127.0.0.1:{port}: ")
    assert "hunter2" not in out + out2 and "wrong" not in out + out2


def test_status_with_an_empty_cluster(site: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A reachable Redis where no node has registered: the summary line alone."""
    with redis_server(tmp_path) as client:
        port = client.connection_pool.connection_kwargs["port"]
        add_cluster(site, f'url = "redis://127.0.0.1:{port}"\n')
        status, out, _ = run_main(capsys, "status")
    assert (status, out) == (3, "vinespy is not running\n"
                                f"cluster redis://127.0.0.1:{port}: 0 nodes, 0 alive\n")


def test_status_when_redis_is_unreachable(site: Path, sleeper: subprocess.Popen[bytes],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Redis down: one line "cluster: cannot reach URL: REASON" without the password;
    the exit status is the local one (0 running, 3 not)."""
    port = free_port()                      # nothing listens there
    add_cluster(site, f'url = "redis://:s3cret@127.0.0.1:{port}/0"\n')
    status, out, err = run_main(capsys, "status")
    assert (status, err) == (3, "")
    lines = out.splitlines()
    assert lines[0] == "vinespy is not running" and len(lines) == 2
    assert lines[1].startswith(f"cluster: cannot reach redis://:***@127.0.0.1:{port}/0: ")
    assert "s3cret" not in out
    (site / "pid" / "vinespy.pid").write_text(f"{sleeper.pid}\n")
    status, out, _ = run_main(capsys, "status")
    assert status == 0
    assert out.splitlines()[1].startswith("cluster: cannot reach ")


def test_status_without_a_cluster_prints_no_cluster_line(
        site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Standalone: status prints exactly what it always did."""
    status, out, err = run_main(capsys, "status")
    assert (status, out, err) == (3, "vinespy is not running\n", "")


def test_status_with_a_broken_config(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that no longer loads: the local answer, then the reason on stderr."""
    config = site / "conf" / "config.toml"
    config.write_text(config.read_text().replace('log = "info"', 'log = "loud"'))
    status, out, err = run_main(capsys, "status")
    assert (status, out) == (3, "vinespy is not running\n")
    assert_one_line_error(err, "log")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:pw@h:1/2", "redis://:***@h:1/2"),
    ("rediss://user:pw@h/0", "rediss://user:***@h/0"),
    ("redis://user@h", "redis://user@h"),
    ("unix://:pw@/run/redis.sock?db=1&password=pw", "unix://:***@/run/redis.sock"),
])
def test_safe_url(url: str, shown: str) -> None:
    """URLs are printed without their password (in the userinfo or the query)."""
    from vinespy.cluster.status import safe_url
    assert safe_url(url) == shown


# --------------------------------------------------------------------------
# the real thing, in subprocesses

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """A directory made by ``vinespy init``, listening on a free loopback port."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.pid_file = root / "pid" / "vinespy.pid"

    def run(self, *argv: str, launcher: str = "module") -> subprocess.CompletedProcess[str]:
        """The command run as the operator does, inside the directory."""
        return subprocess.run(self.command(launcher) + list(argv), cwd=self.root,
                              env=self.env(), capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def command(self, launcher: str = "module") -> list[str]:
        if launcher == "bin":
            return [sys.executable, str(ROOT / "bin" / "vinespy")]
        return [sys.executable, "-m", "vinespy"]

    def env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}

    def connect(self) -> None:
        """Open and close one TCP connection to the client port (raises if refused)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5):
            pass

    def kill_leftover(self) -> None:
        pid = pidfile.read_pid(self.pid_file)
        if pid is not None and pidfile.process_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def live_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Iterator[Site]:
    """An init'ed site whose client port is a free loopback port; killed at teardown."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", DOMAIN]) == 0
    capsys.readouterr()
    root = tmp_path / DOMAIN
    port = free_port()
    config = root / "conf" / "config.toml"
    text = config.read_text()
    assert 'address = "0.0.0.0"\nport = 5222\n' in text
    config.write_text(text.replace('address = "0.0.0.0"\nport = 5222\n',
                                   f'address = "127.0.0.1"\nport = {port}\n'))
    site = Site(root, port)
    yield site
    site.kill_leftover()


def assert_daemon_stopped(site: Site, pid: int) -> None:
    result = site.run("stop")
    assert result.returncode == 0, result.stderr
    assert not pidfile.process_alive(pid)
    assert not site.pid_file.exists()


@pytest.mark.integration
def test_daemon_lifecycle(live_site: Site) -> None:
    """start -d returns once listening; status 0; stop ends it and its pid file; status 3."""
    result = live_site.run("start", "-d")
    assert result.returncode == 0, result.stderr
    live_site.connect()                     # listening the moment start -d returned
    pid = pidfile.read_pid(live_site.pid_file)
    assert pid is not None and pidfile.process_alive(pid)
    assert str(pid) in result.stdout

    status = live_site.run("status")
    assert (status.returncode, status.stdout) == (0, f"vinespy is running (pid {pid})\n")

    assert_daemon_stopped(live_site, pid)
    status = live_site.run("status")
    assert (status.returncode, status.stdout) == (3, "vinespy is not running\n")
    log = (live_site.root / "log" / "vinespy.log").read_text()
    assert "listening" in log


@pytest.mark.integration
def test_second_start_says_already_running(live_site: Site) -> None:
    """start -d while the daemon runs fails in one line naming its pid."""
    assert live_site.run("start", "-d", launcher="bin").returncode == 0
    pid = pidfile.read_pid(live_site.pid_file)
    second = live_site.run("start", "-d", launcher="bin")
    assert second.returncode == 1
    assert second.stderr == f"vinespy: already running (pid {pid})\n"
    foreground = live_site.run("start")
    assert foreground.stderr == f"vinespy: already running (pid {pid})\n"
    assert pid is not None
    assert_daemon_stopped(live_site, pid)


@pytest.mark.integration
def test_restart_replaces_the_daemon(live_site: Site) -> None:
    """restart stops the running daemon and starts a new, listening one."""
    assert live_site.run("start", "-d").returncode == 0
    old = pidfile.read_pid(live_site.pid_file)
    result = live_site.run("restart")
    assert result.returncode == 0, result.stderr
    live_site.connect()
    new = pidfile.read_pid(live_site.pid_file)
    assert new is not None and old is not None and new != old
    assert not pidfile.process_alive(old)
    assert_daemon_stopped(live_site, new)


@pytest.mark.integration
def test_restart_when_not_running_starts(live_site: Site) -> None:
    """restart with nothing running simply starts the daemon."""
    result = live_site.run("restart")
    assert result.returncode == 0, result.stderr
    live_site.connect()
    pid = pidfile.read_pid(live_site.pid_file)
    assert pid is not None
    assert_daemon_stopped(live_site, pid)


@pytest.mark.integration
def test_daemon_reports_a_taken_port(live_site: Site) -> None:
    """start -d on a port already in use exits 1 with the reason, leaving no pid file."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", live_site.port))
        s.listen()
        result = live_site.run("start", "-d")
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert not live_site.pid_file.exists()


@pytest.mark.integration
def test_foreground_start_stops_on_sigterm(live_site: Site) -> None:
    """A foreground server logs to stderr, keeps a pid file and exits 0 on SIGTERM."""
    proc = subprocess.Popen(live_site.command() + ["start"], cwd=live_site.root,
                            env=live_site.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:            # run() logs once its listeners are bound
            if "listening" in line:
                break
        else:
            pytest.fail(f"exited {proc.wait()} without listening")
        live_site.connect()
        assert pidfile.read_pid(live_site.pid_file) == proc.pid
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert not live_site.pid_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.integration
def test_config_error_in_a_subprocess(live_site: Site) -> None:
    """A broken config: start exits 1 with one stderr line and no traceback."""
    config = live_site.root / "conf" / "config.toml"
    config.write_text(config.read_text().replace("port = ", "port = -", 1))
    for argv in (["start"], ["start", "-d"]):
        result = live_site.run(*argv)
        assert result.returncode == 1
        assert_one_line_error(result.stderr, "port")
    assert not live_site.pid_file.exists()


# --------------------------------------------------------------------------
# start --workers N: the supervisor, with a stand-in for server.run

# Runs the real command line with vinespy.server.run replaced: each worker
# writes FAKE_DIR/NODE.PID (what it was given), reports ready, then waits for
# SIGTERM/SIGINT. FAKE_MODE=fail: every worker fails to start; fail-w1: only
# worker 1 does; crash: every worker exits 3 right after reporting ready.
FAKE_VINESPY = """
import json, os, signal, sys
from vinespy import cli, server
from vinespy.process import workers

def fake_run(config, ready=None):
    node = config.cluster.node
    mode = os.environ.get("FAKE_MODE", "serve")
    with open(os.path.join(os.environ["FAKE_DIR"], f"{node}.{os.getpid()}"), "w") as f:
        json.dump({"reuse_port": config.client.reuse_port, "port": config.client.port}, f)
    if mode == "fail" or (mode == "fail-w1" and node.endswith("-w1")):
        raise server.StartupError("cannot listen on 127.0.0.1:1: Address already in use")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if ready:
        ready()
    if mode == "crash":
        os._exit(3)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0

server.run = fake_run
workers.RESTART_DELAY = float(os.environ.get("FAKE_RESTART_DELAY", "1"))
sys.exit(cli.main(sys.argv[1:]))
"""


class FakeSite:
    """An init'ed site with a [cluster] table (node "n"), run by FAKE_VINESPY."""

    def __init__(self, root: Path, tmp_path: Path) -> None:
        self.root = root
        self.pid_file = root / "pid" / "vinespy.pid"
        self.log_file = root / "log" / "vinespy.log"
        self.markers = tmp_path / "markers"
        self.markers.mkdir()
        self.script = tmp_path / "fake_vinespy.py"       # "vinespy" in its command line
        self.script.write_text(FAKE_VINESPY)
        self.procs: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "FAKE_DIR": str(self.markers), **extra,
                "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(self.script), *argv], cwd=self.root,
                              env=self.env(**env), capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def popen(self, *argv: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(self.script), *argv], cwd=self.root,
                                env=self.env(**env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def workers(self) -> dict[str, list[int]]:
        """node -> the pids that have served it, oldest first."""
        out: dict[str, list[int]] = {}
        for path in sorted(self.markers.iterdir(), key=lambda p: p.stat().st_mtime_ns):
            node, _, pid = path.name.rpartition(".")
            out.setdefault(node, []).append(int(pid))
        return out

    def given(self, node: str, pid: int) -> dict[str, object]:
        result: dict[str, object] = json.loads((self.markers / f"{node}.{pid}").read_text())
        return result

    def live_pids(self) -> list[int]:
        return [p for pids in self.workers().values() for p in pids if pidfile.process_alive(p)]

    def cleanup(self) -> None:
        for pid in [pidfile.read_pid(self.pid_file), *self.live_pids()]:
            if pid is not None and pidfile.process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def eventually(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` until it is true (for state only a file shows)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def wait_for_line(stream: io.TextIOBase | None, fragment: str) -> str:
    """Read ``stream`` until a line holds ``fragment`` (pytest-timeout bounds it)."""
    assert stream is not None
    seen = ""
    for line in stream:
        seen += line
        if fragment in line:
            return seen
    pytest.fail(f"end of output without {fragment!r}: {seen}")


@pytest.fixture
def fake_site(site: Path, tmp_path: Path) -> Iterator[FakeSite]:
    add_cluster(site, f'url = "redis://127.0.0.1:{free_port()}/0"\nnode = "n"\n')
    fake = FakeSite(site, tmp_path)
    yield fake
    fake.cleanup()


@pytest.mark.integration
def test_workers_daemon_lifecycle(fake_site: FakeSite) -> None:
    """start -d --workers 3: a supervisor holding the pid file and 3 workers, nodes
    n-w0..n-w2 with reuse_port; status, restart (3 workers again) and stop work."""
    result = fake_site.run("start", "-d", "--workers", "3")
    assert result.returncode == 0, result.stderr
    parent = pidfile.read_pid(fake_site.pid_file)
    assert parent is not None and pidfile.process_alive(parent)
    assert f"(pid {parent}, 3 workers)" in result.stdout
    workers = fake_site.workers()
    assert sorted(workers) == ["n-w0", "n-w1", "n-w2"]
    for node, (pid,) in workers.items():
        assert fake_site.given(node, pid)["reuse_port"] is True
        assert Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1] == \
            str(parent)                                     # the supervisor's children
    status = fake_site.run("status")
    assert status.returncode == 0
    assert status.stdout.startswith(f"vinespy is running (pid {parent})\n")

    result = fake_site.run("restart")
    assert result.returncode == 0, result.stderr
    assert not pidfile.process_alive(parent)
    assert not any(pidfile.process_alive(p) for (p,) in workers.values())
    new = pidfile.read_pid(fake_site.pid_file)
    assert new is not None and new != parent and "3 workers" in result.stdout
    assert all(len(pids) == 2 for pids in fake_site.workers().values())

    live = fake_site.live_pids()
    assert len(live) == 3
    result = fake_site.run("stop")
    assert result.returncode == 0, result.stderr
    assert not pidfile.process_alive(new) and fake_site.live_pids() == []
    assert list((fake_site.root / "pid").iterdir()) == []
    assert "every worker has exited" in fake_site.log_file.read_text()


@pytest.mark.integration
def test_workers_replace_a_dead_worker(fake_site: FakeSite) -> None:
    """A worker killed from outside is replaced after about a second, and logged."""
    assert fake_site.run("start", "-d", "--workers", "2").returncode == 0
    (victim,) = fake_site.workers()["n-w1"]
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: len(fake_site.workers().get("n-w1", [])) == 2, "a new worker 1")
    assert len(fake_site.workers()["n-w0"]) == 1
    eventually(lambda: "is listening again" in fake_site.log_file.read_text(), "its report")
    log = fake_site.log_file.read_text()
    assert "worker 1 was killed by SIGKILL; restarting it in 1 s" in log
    assert fake_site.run("stop").returncode == 0
    assert fake_site.live_pids() == []


@pytest.mark.integration
def test_workers_restarts_are_limited(fake_site: FakeSite) -> None:
    """A worker that keeps failing is restarted 5 times, then given up; the others serve."""
    result = fake_site.run("start", "-d", "--workers", "2",
                           FAKE_MODE="fail-w1", FAKE_RESTART_DELAY="0.05")
    assert result.returncode == 0, result.stderr
    eventually(lambda: "giving up on it" in fake_site.log_file.read_text(), "giving up")
    assert len(fake_site.workers()["n-w1"]) == 6                # the first start + 5
    log = fake_site.log_file.read_text()
    assert log.count("vinespy: worker 1: cannot listen on 127.0.0.1:1: ") == 6
    assert len(fake_site.live_pids()) == 1
    assert fake_site.run("status").returncode == 0
    assert fake_site.run("stop").returncode == 0


@pytest.mark.integration
def test_workers_all_failing_to_start(fake_site: FakeSite) -> None:
    """No worker starts: start -d says why in one line; in the foreground each worker
    prints its line and the supervisor exits 1; no pid file is left."""
    result = fake_site.run("start", "-d", "--workers", "2", FAKE_MODE="fail")
    assert result.returncode == 1
    assert result.stderr == ("vinespy: no worker started: worker 0: cannot listen on "
                             "127.0.0.1:1: Address already in use\n")
    assert list((fake_site.root / "pid").iterdir()) == []

    result = fake_site.run("start", "--workers", "2", FAKE_MODE="fail")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("vinespy: ")]
    assert sorted(errors) == [
        "vinespy: no worker started: worker 0: cannot listen on 127.0.0.1:1: "
        "Address already in use",
        "vinespy: worker 0: cannot listen on 127.0.0.1:1: Address already in use",
        "vinespy: worker 1: cannot listen on 127.0.0.1:1: Address already in use",
    ]
    assert "Traceback" not in result.stderr
    assert list((fake_site.root / "pid").iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_workers_foreground_stop(fake_site: FakeSite, sig: signal.Signals) -> None:
    """In the foreground, SIGTERM/SIGINT to the supervisor reaches every worker;
    it exits 0 once they have exited and removes its pid file."""
    proc = fake_site.popen("start", "--workers", "2")
    wait_for_line(proc.stderr, "2 of 2 workers listening")
    assert pidfile.read_pid(fake_site.pid_file) == proc.pid
    workers = fake_site.live_pids()
    assert len(workers) == 2
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not any(pidfile.process_alive(p) for p in workers)
    assert not fake_site.pid_file.exists()


@pytest.mark.integration
def test_workers_all_dead_for_good(fake_site: FakeSite) -> None:
    """When every worker keeps dying and none may be restarted, the supervisor exits 1."""
    proc = fake_site.popen("start", "--workers", "2", FAKE_MODE="crash",
                           FAKE_RESTART_DELAY="0.05")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "every worker has died and none may be restarted" in err
    assert err.count("giving up on it") == 2
    assert not fake_site.pid_file.exists()
