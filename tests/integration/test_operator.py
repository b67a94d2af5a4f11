"""What an operator does, end to end: init, start, clients chat, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from pathlib import Path

import pytest
import slixmpp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import TIMEOUT, free_port, wait_event

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "wonderland.lit"


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


async def vinespy(*argv: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vinespy", *argv, cwd=cwd, env=env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_init_start_chat_sigterm(tmp_path: Path) -> None:
    """init's users log in over STARTTLS with init's (ECDSA) certificate, chat, and a
    SIGTERM closes their streams with </stream:stream> and exits 0."""
    rc, out, err = await vinespy("init", DOMAIN, cwd=tmp_path)
    assert rc == 0, err
    passwords = dict(re.findall(r"(\w+)@wonderland\.lit\s+password: (\S+)", out))
    assert set(passwords) == {"alice", "arthur"}
    site = tmp_path / DOMAIN
    port = free_port()
    config = site / "conf" / "config.toml"
    config.write_text(config.read_text().replace(
        'address = "0.0.0.0"\nport = 5222', f'address = "127.0.0.1"\nport = {port}'))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vinespy", "start", cwd=site, env=env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        while b"listening on" not in (line := await asyncio.wait_for(
                proc.stderr.readline(), TIMEOUT)):
            assert line, "the server exited before listening"

        ctx = ssl.create_default_context(cafile=str(site / "conf" / "certs" / f"{DOMAIN}.crt"))
        clients = {}
        for user, password in passwords.items():
            c = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/desk", password)
            c.ssl_context = ctx
            c.enable_direct_tls = False
            c.auto_reconnect = False
            started = asyncio.create_task(wait_event(c, "session_start"))
            await asyncio.sleep(0)
            c.connect("127.0.0.1", port)
            await started
            # init's certificate is ECDSA P-256 (the cheaper handshake), and verified.
            peer = x509.load_der_x509_certificate(
                c.transport.get_extra_info("ssl_object").getpeercert(binary_form=True))
            assert isinstance(peer.public_key(), ec.EllipticCurvePublicKey)
            c.send_presence()
            clients[user] = c
        alice, arthur = clients["alice"], clients["arthur"]
        got = asyncio.create_task(wait_event(arthur, "message"))
        await asyncio.sleep(0)
        alice.send_message(mto=f"arthur@{DOMAIN}/desk", mbody="tea?", mtype="chat")
        assert (await got)["body"] == "tea?"

        shutdown = asyncio.create_task(wait_event(alice, "stream_error"))
        gone = asyncio.create_task(wait_event(alice, "disconnected"))
        await asyncio.sleep(0)
        proc.send_signal(signal.SIGTERM)
        assert (await shutdown)["condition"] == "system-shutdown"
        await gone
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("case", ["unreachable", "schema"])
async def test_start_refuses_a_database_it_cannot_use(tmp_path: Path, case: str) -> None:
    """`vinespy start` on backend = "sql" checks the database before it
    listens: one that does not answer (its password never shown), or one of
    another schema version, stops it with one line and a non-zero status."""
    import sqlite3
    rc, _, err = await vinespy("init", DOMAIN, cwd=tmp_path)
    assert rc == 0, err
    site = tmp_path / DOMAIN
    config = site / "conf" / "config.toml"
    if case == "unreachable":
        url = f"postgresql://vines:s3cret@127.0.0.1:{free_port()}/vinespy"
    else:
        (site / "data").mkdir(exist_ok=True)
        with sqlite3.connect(site / "data" / "other.db") as db:
            db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            db.execute("INSERT INTO schema_version VALUES (99)")
        url = "sqlite:///data/other.db"
    text = config.read_text().replace('backend = "fs"', f'backend = "sql"\nurl = "{url}"', 1)
    config.write_text(re.sub(r'\ndir = "data"[^\n]*', "\n", text, count=1).replace(
        'address = "0.0.0.0"\nport = 5222', f'address = "127.0.0.1"\nport = {free_port()}'))
    rc, out, err = await vinespy("start", cwd=site)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1, (rc, err)
    assert "listening" not in err and "s3cret" not in err
    if case == "unreachable":
        assert "postgresql://vines:***@127.0.0.1" in lines[0], lines[0]
    else:
        assert "schema version 99" in lines[0], lines[0]
