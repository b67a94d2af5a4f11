"""``vinespy pubsub`` on a host whose storage is ``backend = "sql"``: the
commands read and write the nodes in the host's database (SQLite here),
the one the server keeps them in, with or without a ``[cluster]`` table.
No mocks: what the commands write is read back through the sql store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import pytest

from tests.unit.test_cli import run_main
from tests.unit.test_cli_pubsub import ALICE, BOB, GAMES, fails, set_config
from tests.unit.test_cli_pubsub import site  # noqa: F401  (a fixture)
from vinespy.storage.pubsub import PubSubStore, open_pubsub
from vinespy.storage.sql import SqlStorage

T = TypeVar("T")


@pytest.fixture
def sql_site(site: Path) -> Path:  # noqa: F811  (the fixture imported above)
    """The site with ``[host.storage] backend = "sql"`` on data/vinespy.db."""
    set_config(site, 'backend = "fs"', 'backend = "sql"')
    set_config(site, 'dir = "data"', 'url = "sqlite:///data/vinespy.db"')
    return site


def on_sql(root: Path, call: Callable[[PubSubStore], Awaitable[T]]) -> T:
    """``await call(store)`` on the sql pubsub store of the site's database."""
    async def go() -> T:
        storage = SqlStorage(f"sqlite:///{root / 'data' / 'vinespy.db'}")
        try:
            return await call(open_pubsub("sql", storage=storage))
        finally:
            await storage.close()
    return asyncio.run(go())


def test_sql_create_list_subscribers_items_delete(sql_site: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Every action works on the database; nothing goes to a pubsub directory."""
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "", "")
    assert run_main(capsys, "pubsub", "create", GAMES, "chess") == \
        (0, f"Created node chess on {GAMES} (owner {GAMES})\n", "")
    assert run_main(capsys, "pubsub", "create", GAMES, "go", "--owner", ALICE)[0] == 0
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "chess\ngo\n", "")
    node = on_sql(sql_site, lambda s: s.get(GAMES, "go"))
    assert node is not None and node.owner == ALICE
    assert fails(capsys, "pubsub", "create", GAMES, "go") == \
        f"node 'go' already exists on {GAMES}"

    async def fill(s: PubSubStore) -> None:
        await s.subscribe(GAMES, "chess", BOB, "b1")
        await s.publish(GAMES, "chess", "m1", b"<move xmlns='urn:x'>e4</move>", ALICE, None)
        await s.publish(GAMES, "chess", "m2", b"<move xmlns='urn:x'>e5</move>", BOB, None)
    on_sql(sql_site, fill)
    assert run_main(capsys, "pubsub", "subscribers", GAMES, "chess") == (0, f"{BOB} b1\n", "")
    status, out, _ = run_main(capsys, "pubsub", "items", GAMES, "chess", "--max", "1")
    assert status == 0 and out.startswith("id: m2\n") and "e5</move>" in out and "m1" not in out
    assert run_main(capsys, "pubsub", "delete", GAMES, "chess") == \
        (0, f"Deleted node chess of {GAMES}\n", "")
    assert on_sql(sql_site, lambda s: s.nodes(GAMES)) == ["go"]
    assert fails(capsys, "pubsub", "items", GAMES, "chess") == f"no node 'chess' on {GAMES}"
    assert not (sql_site / "data" / "pubsub").exists()


def test_sql_in_a_cluster_stays_in_the_database(sql_site: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """With [cluster] too, a sql host's nodes are in its database: the
    commands work with the cluster's Redis unreachable (port 1)."""
    config = sql_site / "conf" / "config.toml"
    config.write_text(config.read_text() + '\n[cluster]\nurl = "redis://127.0.0.1:1/0"\n')
    assert run_main(capsys, "pubsub", "create", GAMES, "chess")[0] == 0
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "chess\n", "")
    assert on_sql(sql_site, lambda s: s.nodes(GAMES)) == ["chess"]


def test_sql_database_out_of_reach(sql_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable PostgreSQL: one line naming it, without its password, exit 1."""
    set_config(sql_site, 'url = "sqlite:///data/vinespy.db"',
               'url = "postgresql://vinespy:t0p-s3cret@127.0.0.1:1/vinespy"')
    for argv in (["list", GAMES], ["create", GAMES, "chess"]):
        err = fails(capsys, "pubsub", *argv)
        assert err.startswith("pubsub ") and "127.0.0.1:1" in err, err
        assert "t0p-s3cret" not in err
