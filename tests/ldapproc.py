"""The test suite's LDAP directory: a real OpenLDAP ``slapd`` on free loopback
ports, its configuration generated into a temporary directory (an mdb
database loaded with ``slapadd`` before the first start, no system service),
stopped by whoever started it, and only that process.

It listens on ``ldap://`` (StartTLS possible) and ``ldaps://`` with a
certificate for ``localhost`` from the tests' trustme CA. :meth:`stop` and
:meth:`start` again keep the same ports and data: the outage tests take the
directory away under a running server and bring it back.

The binaries are Debian's ``slapd`` and ``slapadd`` (``$VINESPY_TEST_SLAPD``
overrides the slapd path); a missing one is a failure, like a missing
redis-server (tests/run installs ``slapd`` and ``ldap-utils``). slapd does
not mind running as root, so unlike tests/pgproc.py there is no account
switch.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import trustme

from tests.support import TIMEOUT, free_port, wait_ready

SUFFIX = "dc=wonderland,dc=lit"
PEOPLE = f"ou=people,{SUFFIX}"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "adm1n-s3cret"
SEARCH_DN = f"cn=vinespy,{SUFFIX}"          # the server's search account
SEARCH_PASSWORD = "search-s3cret"
# uid -> password of the directory's people
USERS = {"alice": "alice-pässword", "bob": "bob-password", "carol": "carol-password"}


def ssha(password: str) -> str:
    """An RFC 2307 ``{SSHA}`` userPassword, as ``slappasswd`` makes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def slapd_bin() -> Path:
    path = Path(os.environ.get("VINESPY_TEST_SLAPD", "/usr/sbin/slapd"))
    if not path.exists():
        pytest.fail(f"no {path}: apt-get install slapd ldap-utils (tests/run does)")
    return path


def _ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
        f"o: Wonderland\ndc: wonderland\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {SEARCH_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: vinespy\nuserPassword: {ssha(SEARCH_PASSWORD)}\n",
    ]
    for uid, password in USERS.items():
        entries.append(f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                       f"cn: {uid.title()}\nsn: {uid.title()}\n"
                       f"userPassword: {ssha(password)}\n")
    return "\n".join(entries)


class SlapdProcess:
    """One slapd this object started (and only that one)."""

    def __init__(self, ca: trustme.CA) -> None:
        self.bin = slapd_bin()
        self.port = free_port()
        self.tls_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vinespy-ldap-"))
        self.ca_file = self.dir / "ca.pem"
        self.proc: subprocess.Popen[bytes] | None = None
        ca.cert_pem.write_to_path(str(self.ca_file))
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        leaf.private_key_pem.write_to_path(str(self.dir / "slapd.key"))
        (self.dir / "slapd.crt").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        self._configure()

    @property
    def url(self) -> str:
        """Plain LDAP (StartTLS offered) on loopback."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """LDAP over TLS, by the certificate's name."""
        return f"ldaps://localhost:{self.tls_port}"

    def _configure(self) -> None:
        d = self.dir
        (d / "db").mkdir()
        schema = "/etc/ldap/schema"
        (d / "slapd.conf").write_text(
            "".join(f"include {schema}/{s}.schema\n"
                    for s in ("core", "cosine", "inetorgperson", "nis"))
            + f"modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"pidfile {d}/slapd.pid\n"
            f"TLSCACertificateFile {self.ca_file}\n"
            f"TLSCertificateFile {d}/slapd.crt\nTLSCertificateKeyFile {d}/slapd.key\n"
            f"database mdb\nmaxsize 16777216\nsuffix \"{SUFFIX}\"\n"
            f"rootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PASSWORD}\ndirectory {d}/db\n"
            # Passwords are only good for binding; the search account reads the rest.
            "access to attrs=userPassword by anonymous auth by * none\n"
            f"access to * by dn.exact=\"{SEARCH_DN}\" read by * none\n")
        (d / "users.ldif").write_text(_ldif())
        self._run(str(Path(self.bin).parent / "slapadd"), "-f", str(d / "slapd.conf"),
                  "-l", str(d / "users.ldif"))

    def _run(self, *argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, cwd=self.dir)
        if done.returncode:
            raise AssertionError(f"{argv[0]} exited {done.returncode}: "
                                 f"{(done.stdout + done.stderr).decode(errors='replace')}")

    def start(self) -> None:
        """Start slapd (again) on the same ports; return once it accepts."""
        assert self.proc is None
        log = open(self.dir / "slapd.log", "ab")
        with log:
            # -d: stay in the foreground (our child), logging to stderr.
            self.proc = subprocess.Popen(
                [str(self.bin), "-f", str(self.dir / "slapd.conf"), "-d", "none",
                 "-h", f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir)
        wait_ready("slapd", self._ready, self.stop)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"slapd exited {self.proc.returncode}: "
                                 f"{(self.dir / 'slapd.log').read_text(errors='replace')}")
        for port in (self.port, self.tls_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
            except ConnectionRefusedError:
                return False
        return True

    def stop(self) -> None:
        """Stop slapd if it runs (SIGKILL after TIMEOUT); the data stays."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def slapd(ca: trustme.CA) -> Iterator[SlapdProcess]:
    """A running slapd of its own for one test (tests stop and restart it)."""
    server = SlapdProcess(ca)
    try:
        server.start()
        yield server
    finally:
        server.remove()
