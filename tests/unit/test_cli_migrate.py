"""``vinespy migrate --to URL``: fs -> postgresql -> fs and fs -> sqlite -> fs
round trips give identical data (pubsub nodes and items included, with
their times) and leave the source byte-identical; counts per kind;
idempotent; --skip-pubsub; the target's pubsub store; refused while the
server runs; a run killed midway completes when run again."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import asyncpg
import pytest

from tests.pgproc import PASSWORD as PG_PASSWORD, PostgresProcess
from tests.storage.migrate_data import DOMAIN, populate, populate_pubsub, snapshot
from tests.unit.test_cli import assert_one_line_error, run_main
from vinespy.cli.migrate import pubsub_target, target_storage
from vinespy.jid import JID
from vinespy.storage import ScramKeys, User, open_storage
from vinespy.storage.fs import FsStorage
from vinespy.storage.pubsub import open_pubsub
from vinespy.storage.pubsub.fs import FsPubSub
from vinespy.storage.pubsub.sql import SqlPubSub

ROOT = Path(__file__).resolve().parents[2]

COUNTS = ["users: 3", "roster items: 9", "vcards: 4", "private: 3", "keyval blocklist: 3",
          "keyval last: 4", "keyval offline: 3", "keyval private_names: 3"]
PUBSUB_COUNTS = ["pubsub nodes: 2", "pubsub items: 5"]


def write_site(root: Path, storage: str, pubsub: bool = True) -> Path:
    """A site directory with conf/config.toml (no certificates: migrate needs none)."""
    (root / "conf").mkdir(parents=True, exist_ok=True)
    config = root / "conf" / "config.toml"
    config.write_text(f'[[host]]\ndomains = ["{DOMAIN}"]\n'
                      f'pubsub = {["games"] if pubsub else []}\n'.replace("'", '"')
                      + f"[host.storage]\n{storage}\n")
    return config


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def fs_snapshot(data: Path, with_pubsub: bool = False) -> dict[str, Any]:
    pubsub = open_pubsub("fs", dir=data / "pubsub") if with_pubsub else None
    return asyncio.run(snapshot(FsStorage(data), pubsub))


@pytest.fixture
def fs_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site on fs storage with 3 users, a stranger's data and 2 pubsub nodes;
    the current directory."""
    site = tmp_path / "site"
    write_site(site, 'backend = "fs"\ndir = "data"')

    async def fill() -> None:
        await populate(FsStorage(site / "data"))
        await populate_pubsub(open_pubsub("fs", dir=site / "data" / "pubsub"))
    asyncio.run(fill())
    monkeypatch.chdir(site)
    yield site


def migrate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run_main(capsys, "migrate", *argv)


def test_fs_to_postgresql_to_fs_round_trip(fs_site: Path, tmp_path: Path,
                                           request: pytest.FixtureRequest,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """fs -> PostgreSQL -> a new fs directory: identical data, pubsub nodes and
    items with their times included, counts printed and verified, the source
    files byte-identical."""
    before = tree(fs_site / "data")
    server: PostgresProcess = request.getfixturevalue("postgres")
    url = server.url(server.createdb())
    pw = tmp_path / "pgpw"
    pw.write_text(PG_PASSWORD + "\n")
    status, out, err = migrate(capsys, "--to", url, "--password-file", str(pw))
    assert (status, err) == (0, ""), err
    assert out.splitlines()[1:-1] == [*COUNTS, *PUBSUB_COUNTS]
    assert out.splitlines()[-1].startswith("verified: the target holds the same")
    assert tree(fs_site / "data") == before

    back = tmp_path / "back"
    config = write_site(back, f'backend = "sql"\nurl = "{url}"\npassword_file = "{pw}"')
    status, out, err = run_main(capsys, "-c", str(config), "migrate", "--to", "fs:///data")
    assert (status, err) == (0, ""), err
    assert out.splitlines()[1:-1] == [*COUNTS, *PUBSUB_COUNTS]
    assert fs_snapshot(back / "data", True) == fs_snapshot(fs_site / "data", True)


def test_fs_to_sqlite_to_fs_round_trip(fs_site: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """fs -> SQLite twice (the same counts, nothing duplicated, the pubsub
    nodes in the database's tables), then SQLite -> fs: identical data,
    pubsub times included; neither source is written."""
    before = tree(fs_site / "data")
    runs = [migrate(capsys, "--to", "sqlite:///copy/vinespy.db") for _ in range(2)]
    assert runs[0] == runs[1] and runs[0][0] == 0, runs[0]
    assert runs[0][1].splitlines()[1:-1] == [*COUNTS, *PUBSUB_COUNTS]
    assert tree(fs_site / "data") == before
    db = fs_site / "copy" / "vinespy.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM pubsub_nodes").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM pubsub_items").fetchone() == (5,)
    assert not (fs_site / "copy" / "pubsub").exists()
    db_bytes = db.read_bytes()
    config = write_site(tmp_path / "back", f'backend = "sql"\nurl = "sqlite:///{db}"')
    status, out, err = run_main(capsys, "-c", str(config), "migrate", "--to", "data")
    assert (status, err) == (0, ""), err
    assert out.splitlines()[1:-1] == [*COUNTS, *PUBSUB_COUNTS]
    assert db.read_bytes() == db_bytes
    assert (fs_snapshot(tmp_path / "back" / "data", True)
            == fs_snapshot(fs_site / "data", True))


def test_fs_to_fs_copies_pubsub(fs_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An fs target gets the pubsub nodes too, times and item order kept."""
    status, out, err = migrate(capsys, "--to", "fs:///copy")
    assert (status, err) == (0, ""), err
    assert "pubsub nodes: 2" in out.splitlines() and "pubsub items: 5" in out.splitlines()
    assert fs_snapshot(fs_site / "copy", True) == fs_snapshot(fs_site / "data", True)


def test_skip_pubsub_copies_no_nodes(fs_site: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--skip-pubsub copies the rest and no pubsub node (to SQLite and fs)."""
    for to in ("sqlite:///copy.db", "fs:///copy"):
        status, out, err = migrate(capsys, "--to", to, "--skip-pubsub")
        assert (status, err) == (0, ""), err
        assert out.splitlines()[1:-1] == [*COUNTS, "pubsub nodes: 0", "pubsub items: 0"]
    with sqlite3.connect(fs_site / "copy.db") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM pubsub_nodes").fetchone() == (0,)
    assert fs_snapshot(fs_site / "copy", True)["nodes"] == {}


async def test_a_sql_target_keeps_pubsub_in_the_target_storage(tmp_path: Path) -> None:
    """The pubsub store of a sql target works on the target's SqlStorage (no
    engine of its own) and leaves closing it to the command; an fs target's
    is pubsub/ in its directory. No target keeps nodes nowhere."""
    cfg = target_storage("sqlite:///t.db", tmp_path, None)
    target = open_storage(cfg.backend, cfg.options)
    try:
        store = pubsub_target(cfg, target)
        assert isinstance(store, SqlPubSub) and store.storage is target
        assert await store.create("s", "n", "a@x", {})
        await store.close()
        assert await store.nodes("s") == ["n"]          # the target is still open
    finally:
        await target.close()
    cfg = target_storage("fs:///copy", tmp_path, None)
    store = pubsub_target(cfg, open_storage(cfg.backend, cfg.options))
    assert isinstance(store, FsPubSub) and store.dir == tmp_path / "copy" / "pubsub"


def test_refused_while_the_server_runs(fs_site: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A live server in the pid file: one line and exit 1; --force copies anyway."""
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "vinespy"])
    try:
        (fs_site / "pid").mkdir()
        (fs_site / "pid" / "vinespy.pid").write_text(f"{fake.pid}\n")
        status, _, err = migrate(capsys, "--to", "copy")
        assert status == 1
        assert_one_line_error(err, f"the server runs (pid {fake.pid})", "--force")
        assert not (fs_site / "copy").exists()
        assert migrate(capsys, "--to", "copy", "--force")[0] == 0
    finally:
        fake.kill()
        fake.wait()


@pytest.mark.parametrize("argv, fragment", [
    (["--to", "mysql://x/y"], "expected sqlite:///PATH"),
    (["--to", "fs:///data"], "is a source"),
    (["--to", "copy", "--host", "nowhere.example"], "no [[host]] serves it"),
    (["--to", "copy", "--password-file", "pw"], "for a postgresql:// target"),
])
def test_bad_arguments_are_one_line(fs_site: Path, capsys: pytest.CaptureFixture[str],
                                    argv: list[str], fragment: str) -> None:
    """A bad target or host: one line, exit non-zero, nothing copied."""
    (fs_site / "pw").write_text("x\n")
    status, _, err = migrate(capsys, *argv)
    assert status != 0
    assert_one_line_error(err, fragment)
    assert not (fs_site / "copy").exists()


@pytest.mark.timeout(300)      # SQLite commits ~10 JIDs/s on a slow disk
def test_a_killed_migration_completes_when_run_again(tmp_path: Path) -> None:
    """SIGKILL after the first progress report leaves a partial target; the
    next run copies the rest and verifies it."""
    site = tmp_path / "site"
    config = write_site(site, 'backend = "fs"\ndir = "data"', pubsub=False)
    users = 250
    keys = {"SCRAM-SHA-1": ScramKeys(b"s" * 16, b"k" * 20, b"v" * 20, 4096)}

    async def fill() -> None:
        store = FsStorage(site / "data")
        for i in range(users):
            jid = JID.parse(f"u{i}@{DOMAIN}")
            await store.save_user(User(jid, dict(keys)))
            await store.put(jid, "last", {"time": i})
    asyncio.run(fill())
    argv = [sys.executable, "-m", "vinespy", "-c", str(config), "migrate",
            "--to", "sqlite:///copy.db"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "100 JIDs copied" in line, line
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(site / "copy.db") as conn:
        copied = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    assert 100 <= copied < users
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"users: {users}" in done.stdout.splitlines()
    assert f"keyval last: {users}" in done.stdout.splitlines()
    assert "verified: the target holds the same" in done.stdout


def test_an_empty_postgresql_source_is_refused_and_left_empty(
        tmp_path: Path, request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A source database without the schema is refused in one line, and not
    given one: migrate never writes its source."""
    server: PostgresProcess = request.getfixturevalue("postgres")
    db = server.createdb()
    url = server.url(db)
    site = tmp_path / "empty"
    config = write_site(site, f'backend = "sql"\nurl = "{url}"\npassword = "{PG_PASSWORD}"')
    status, out, err = run_main(capsys, "-c", str(config), "migrate", "--to", "fs:///copy")
    assert status == 1 and "no vinespy schema (an empty database)" in err, (out, err)
    assert len(err.strip().splitlines()) == 1 and PG_PASSWORD not in err

    async def tables() -> list[str]:
        conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="vinespy",
                                     password=PG_PASSWORD, database=db)
        try:
            return [r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        finally:
            await conn.close()
    assert asyncio.run(tables()) == []
