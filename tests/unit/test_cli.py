"""The ``vinespy`` command line: init, accounts, cert, and the server's lifecycle.

Most tests call :func:`vinespy.cli.main` in-process on real files under
``tmp_path``. Those marked ``integration`` run the command as the operator
does, in a subprocess inside a directory made by ``vinespy init``, with the
client port moved to a free loopback port.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from vinespy import __version__, accounts, cli
from vinespy.config import load
from vinespy.jid import JID
from vinespy.storage import User, open_storage

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

    monkeypatch.setattr(cli.getpass, "getpass", fake_getpass)
    status, _, _ = run_main(capsys, "register", f"hatter@{DOMAIN}")
    assert status == 0 and len(prompts) == 2
    assert authenticates(site / "data", f"hatter@{DOMAIN}", "s3cret")


def test_register_refuses_mismatched_passwords(site: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Two different answers to the prompts create nothing."""
    answers = iter(["one", "two"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": next(answers))
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
    paths = cli.RunPaths.for_config(tmp_path / "site" / "conf" / "config.toml")
    assert paths.pid_file == tmp_path / "site" / "pid" / "vinespy.pid"
    assert paths.log_file == tmp_path / "site" / "log" / "vinespy.log"
    paths = cli.RunPaths.for_config(tmp_path / "etc" / "vinespy.toml")
    assert paths.pid_file == tmp_path / "etc" / "pid" / "vinespy.pid"


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
        pid = cli.read_pid(self.pid_file)
        if pid is not None and cli.process_alive(pid):
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
    assert not cli.process_alive(pid)
    assert not site.pid_file.exists()


@pytest.mark.integration
def test_daemon_lifecycle(live_site: Site) -> None:
    """start -d returns once listening; status 0; stop ends it and its pid file; status 3."""
    result = live_site.run("start", "-d")
    assert result.returncode == 0, result.stderr
    live_site.connect()                     # listening the moment start -d returned
    pid = cli.read_pid(live_site.pid_file)
    assert pid is not None and cli.process_alive(pid)
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
    pid = cli.read_pid(live_site.pid_file)
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
    old = cli.read_pid(live_site.pid_file)
    result = live_site.run("restart")
    assert result.returncode == 0, result.stderr
    live_site.connect()
    new = cli.read_pid(live_site.pid_file)
    assert new is not None and old is not None and new != old
    assert not cli.process_alive(old)
    assert_daemon_stopped(live_site, new)


@pytest.mark.integration
def test_restart_when_not_running_starts(live_site: Site) -> None:
    """restart with nothing running simply starts the daemon."""
    result = live_site.run("restart")
    assert result.returncode == 0, result.stderr
    live_site.connect()
    pid = cli.read_pid(live_site.pid_file)
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
        assert cli.read_pid(live_site.pid_file) == proc.pid
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
