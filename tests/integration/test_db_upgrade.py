"""`vinespy db upgrade` and the schema version check of `vinespy start`
(issue 12 item 2), on SQLite and on a real PostgreSQL.

A version-1 database (what vinespy wrote before the pubsub tables came) is
made by writing a current one and taking version 2's step back out: the
pubsub tables dropped, schema_version set to 1.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import DOMAIN, PASSWORD, free_port
from tests.integration.test_operator import vinespy
from tests.pgproc import PASSWORD as PG_PASSWORD
from vinespy import accounts
from vinespy.jid import JID
from vinespy.storage.pubsub.sql import PUBSUB_SCHEMA, SqlPubSub
from vinespy.storage.sql import SqlStorage
from vinespy.storage.sqlschema import SCHEMA_VERSION

pytestmark = pytest.mark.integration
ALICE = JID.parse(f"alice@{DOMAIN}")


async def _site(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """A `vinespy init` site on backend = "sql"; its database URL (absolute)."""
    rc, _, err = await vinespy("init", DOMAIN, cwd=tmp_path)
    assert rc == 0, err
    site = tmp_path / DOMAIN
    if kind == "sqlite":
        url, keys = f"sqlite:///{site / 'data' / 'vinespy.db'}", 'url = "sqlite:///data/vinespy.db"'
    else:
        pg = request.getfixturevalue("postgres")
        url = pg.url(pg.createdb())
        keys = f'url = "{url}"\npassword = "{PG_PASSWORD}"'
    config = site / "conf" / "config.toml"
    body = config.read_text().replace('backend = "fs"', f'backend = "sql"\n{keys}', 1)
    config.write_text(re.sub(r'\ndir = "data"[^\n]*', "\n", body, count=1).replace(
        'address = "0.0.0.0"\nport = 5222', f'address = "127.0.0.1"\nport = {free_port()}'))
    return site, url


async def _version_1(url: str, kind: str) -> None:
    """A database as version 1 left it, holding alice."""
    storage = SqlStorage(url, password=PG_PASSWORD if kind == "postgresql" else None)
    try:
        await accounts.create_user(storage, ALICE, PASSWORD, iterations=4096)
        async with storage.transaction(write=True) as conn:
            await conn.run_sync(PUBSUB_SCHEMA.drop_all)
            await conn.execute(text("UPDATE schema_version SET version = 1"))
    finally:
        await storage.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_start_refuses_an_older_schema_until_db_upgrade(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    site, url = await _site(tmp_path, kind, request)
    await _version_1(url, kind)

    rc, _, err = await vinespy("start", cwd=site)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1, (rc, err)
    assert (f"database schema version 1 is older than this vinespy's ({SCHEMA_VERSION}): "
            "run 'vinespy db upgrade'") in lines[0], lines[0]
    assert PG_PASSWORD not in err

    rc, out, err = await vinespy("db", "upgrade", cwd=site)
    assert rc == 0, err
    assert out.strip().endswith(f"schema upgraded from version 1 to {SCHEMA_VERSION}"), out
    rc, out, err = await vinespy("db", "upgrade", cwd=site)
    assert rc == 0 and "nothing to do" in out, (out, err)

    # alice is still there, and the pubsub tables the upgrade made work.
    storage = SqlStorage(url, password=PG_PASSWORD if kind == "postgresql" else None)
    try:
        assert await accounts.authenticate(storage, ALICE, PASSWORD) is not None
        store = SqlPubSub(storage)
        assert await store.create(f"pubsub.{DOMAIN}", "news", str(ALICE), {})
    finally:
        await storage.close()
    rc, out, err = await vinespy("start", "-d", cwd=site)
    assert rc == 0, err
    rc, _, err = await vinespy("stop", cwd=site)
    assert rc == 0, err


async def test_db_upgrade_creates_an_empty_database_and_needs_sql(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    rc, _, err = await vinespy("init", DOMAIN, cwd=tmp_path)
    assert rc == 0, err
    rc, out, _ = await vinespy("db", "upgrade", cwd=tmp_path / DOMAIN)
    assert rc == 0 and 'no [[host]] has backend = "sql"' in out, out
    (tmp_path / "2").mkdir()
    site, _ = await _site(tmp_path / "2", "sqlite", request)
    rc, out, err = await vinespy("db", "upgrade", cwd=site)
    assert rc == 0 and f"schema created at version {SCHEMA_VERSION}" in out, (out, err)
    rc, _, err = await vinespy("db", cwd=site)
    assert rc == 2 and "no action given" in err, err


async def test_two_nodes_opening_one_empty_database_create_the_schema_once(
        postgres: Any) -> None:
    """Nodes started together on an empty PostgreSQL: the advisory lock makes
    one create the schema and the others find it."""
    url = postgres.url(postgres.createdb())
    nodes = [SqlStorage(url, password=PG_PASSWORD, pool_size=1) for _ in range(4)]
    try:
        await asyncio.gather(*(n.open() for n in nodes))
        async with nodes[0].transaction() as conn:
            rows = (await conn.execute(text("SELECT version FROM schema_version"))).all()
        assert [tuple(r) for r in rows] == [(SCHEMA_VERSION,)]
    finally:
        for n in nodes:
            await n.close()
