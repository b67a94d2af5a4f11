"""``vinespy pubsub list|create|delete|subscribers|items``: the operator's
view of the XEP-0060 nodes, on the storage the server uses.

Standalone tests run :func:`vinespy.cli.main` in a directory made by
``vinespy init`` (fs storage in ``data/``) and read or write the nodes
through the fs store the server opens. Cluster tests run it against a real
redis-server (tests/redisproc.py) and check what the Redis store holds.
No mocks.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest

from tests.unit.test_cli import assert_one_line_error, run_main
from tests.conftest import free_port
from tests.redisproc import redis_server, url_of
from vinespy.storage import pubsub
from vinespy import cli
from vinespy.cluster.connection import connect
from vinespy.config import ClusterConfig, load
from vinespy.storage.pubsub import PubSubStore, open_pubsub

T = TypeVar("T")

DOMAIN = "wonderland.lit"
GAMES = f"games.{DOMAIN}"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --------------------------------------------------------------------------
# helpers

def fails(capsys: pytest.CaptureFixture[str], *argv: str, status: int = 1) -> str:
    """Run a command that must fail: nothing on stdout, one line on stderr."""
    got, out, err = run_main(capsys, *argv)
    assert (got, out) == (status, ""), err
    assert_one_line_error(err)
    return err.removeprefix("vinespy: ").rstrip("\n")


def set_config(site: Path, old: str, new: str) -> None:
    config = site / "conf" / "config.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))


def on_fs(site: Path, call: Callable[[PubSubStore], Awaitable[T]]) -> T:
    """``await call(store)`` on the fs pubsub store of the site's host (where
    a standalone server keeps its nodes)."""
    async def go() -> T:
        store = open_pubsub("fs", dir=site / "data" / "pubsub")
        try:
            return await call(store)
        finally:
            await store.close()
    return asyncio.run(go())


def iso(ms: int) -> str:
    """``ms`` since the epoch as ISO 8601 UTC with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> Path:
    """``vinespy init wonderland.lit`` with ``pubsub = ["games"]``, the current directory."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", DOMAIN]) == 0
    capsys.readouterr()
    root = tmp_path / DOMAIN
    set_config(root, "pubsub = []", 'pubsub = ["games"]')
    monkeypatch.chdir(root)
    return root


# --------------------------------------------------------------------------
# standalone: the fs store in the host's data directory

def test_list_create_delete(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """create makes a node the fs store sees (owner: the service); list shows
    the names sorted; delete removes it."""
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "", "")
    assert run_main(capsys, "pubsub", "create", GAMES, "chess") == \
        (0, f"Created node chess on {GAMES} (owner {GAMES})\n", "")
    assert run_main(capsys, "pubsub", "create", GAMES, "backgammon")[0] == 0
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "backgammon\nchess\n", "")
    node = on_fs(site, lambda s: s.get(GAMES, "chess"))
    assert node is not None and (node.owner, node.config) == (GAMES, {})
    assert on_fs(site, lambda s: s.affiliations(GAMES, "chess")) == {GAMES: "owner"}
    assert (site / "data" / "pubsub").is_dir()
    assert run_main(capsys, "pubsub", "delete", GAMES, "chess") == \
        (0, f"Deleted node chess of {GAMES}\n", "")
    assert on_fs(site, lambda s: s.get(GAMES, "chess")) is None
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "backgammon\n", "")


def test_list_shows_nodes_made_through_the_store(site: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """What the server writes (the store API) is what list reads, odd names included."""
    for name in ("b", "a/b", "..", "ünïcode node"):
        assert on_fs(site, lambda s: s.create(GAMES, name, ALICE, {}))
    status, out, _ = run_main(capsys, "pubsub", "list", GAMES)
    assert status == 0 and out.splitlines() == sorted(["b", "a/b", "..", "ünïcode node"])


def test_create_with_owner(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--owner sets the owner, prepared as a bare JID."""
    status, out, _ = run_main(capsys, "pubsub", "create", GAMES, "go",
                              "--owner", "alice@Wonderland.LIT")
    assert (status, out) == (0, f"Created node go on {GAMES} (owner {ALICE})\n")
    node = on_fs(site, lambda s: s.get(GAMES, "go"))
    assert node is not None and node.owner == ALICE
    assert on_fs(site, lambda s: s.affiliations(GAMES, "go")) == {ALICE: "owner"}


def test_create_refuses_an_existing_node(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second create of a name exits 1 in one line; the node is unchanged."""
    assert on_fs(site, lambda s: s.create(GAMES, "chess", ALICE, {"pubsub#title": "Chess"}))
    assert fails(capsys, "pubsub", "create", GAMES, "chess", "--owner", BOB) == \
        f"node 'chess' already exists on {GAMES}"
    node = on_fs(site, lambda s: s.get(GAMES, "chess"))
    assert node is not None and (node.owner, node.config) == (ALICE, {"pubsub#title": "Chess"})


def test_delete_refuses_a_missing_node(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fails(capsys, "pubsub", "delete", GAMES, "chess") == f"no node 'chess' on {GAMES}"


def test_delete_removes_items_and_subscriptions(site: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A node created again after delete starts empty."""
    async def fill(s: PubSubStore) -> None:
        await s.create(GAMES, "chess", ALICE, {})
        await s.subscribe(GAMES, "chess", BOB, "sub-1")
        await s.publish(GAMES, "chess", "1", b"<move/>", ALICE, None)
    on_fs(site, fill)
    assert run_main(capsys, "pubsub", "delete", GAMES, "chess")[0] == 0
    assert run_main(capsys, "pubsub", "create", GAMES, "chess")[0] == 0
    assert run_main(capsys, "pubsub", "subscribers", GAMES, "chess") == (0, "", "")
    assert run_main(capsys, "pubsub", "items", GAMES, "chess") == (0, "", "")


def test_subscribers(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One ``JID SUBID`` line per subscription, sorted by JID; none: no output."""
    assert on_fs(site, lambda s: s.create(GAMES, "chess", ALICE, {}))
    assert run_main(capsys, "pubsub", "subscribers", GAMES, "chess") == (0, "", "")

    async def subscribe(s: PubSubStore) -> None:
        await s.subscribe(GAMES, "chess", f"{BOB}/phone", "b2")
        await s.subscribe(GAMES, "chess", ALICE, "a1")
        await s.subscribe(GAMES, "chess", BOB, "b1")
    on_fs(site, subscribe)
    assert run_main(capsys, "pubsub", "subscribers", GAMES, "chess") == \
        (0, f"{ALICE} a1\n{BOB} b1\n{BOB}/phone b2\n", "")


def test_subscribers_of_a_missing_node(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fails(capsys, "pubsub", "subscribers", GAMES, "chess") == \
        f"no node 'chess' on {GAMES}"


def test_items(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One block per item, newest first: id, publisher, ISO time, the payload's
    XML; blocks separated by an empty line. --max N: the newest N."""
    async def publish(s: PubSubStore) -> None:
        await s.create(GAMES, "chess", ALICE, {})
        await s.publish(GAMES, "chess", "m1", b"<move xmlns='urn:x'>e4</move>", ALICE, None)
        await s.publish(GAMES, "chess", "m2", b"<move xmlns='urn:x'>e5</move>\n",
                        f"{BOB}/phone", None)
        await s.publish(GAMES, "chess", "empty", b"", ALICE, None)
    on_fs(site, publish)
    items = on_fs(site, lambda s: s.items(GAMES, "chess"))
    when = {i.id: iso(i.published) for i in items}
    assert all(ISO.match(t) for t in when.values())
    blocks = [f"id: empty\npublisher: {ALICE}\npublished: {when['empty']}\n(no payload)\n",
              f"id: m2\npublisher: {BOB}/phone\npublished: {when['m2']}\n"
              "<move xmlns='urn:x'>e5</move>\n",
              f"id: m1\npublisher: {ALICE}\npublished: {when['m1']}\n"
              "<move xmlns='urn:x'>e4</move>\n"]
    assert run_main(capsys, "pubsub", "items", GAMES, "chess") == (0, "\n".join(blocks), "")
    assert run_main(capsys, "pubsub", "items", GAMES, "chess", "--max", "2") == \
        (0, "\n".join(blocks[:2]), "")
    assert run_main(capsys, "pubsub", "items", GAMES, "chess", "--max", "1") == \
        (0, blocks[0], "")


def test_items_of_an_empty_node(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert on_fs(site, lambda s: s.create(GAMES, "chess", ALICE, {}))
    assert run_main(capsys, "pubsub", "items", GAMES, "chess") == (0, "", "")


def test_items_of_a_missing_node(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fails(capsys, "pubsub", "items", GAMES, "chess") == f"no node 'chess' on {GAMES}"


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_items_max_must_be_positive(site: Path, capsys: pytest.CaptureFixture[str],
                                    value: str) -> None:
    """A bad --max is a usage error (status 2), one line."""
    assert "--max: expected an integer of at least 1" in \
        fails(capsys, "pubsub", "items", GAMES, "chess", f"--max={value}", status=2)


def test_service_is_prepared(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SERVICE is a domain: case and a trailing dot do not matter."""
    assert run_main(capsys, "pubsub", "create", "Games.Wonderland.LIT.", "chess")[0] == 0
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "chess\n", "")


def test_unknown_service(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A domain that is not a pubsub service of the config: one line naming those
    it has; a served domain is not a service either."""
    for service in ("scores.wonderland.lit", DOMAIN):
        for argv in (["list", service], ["create", service, "n"], ["delete", service, "n"],
                     ["subscribers", service, "n"], ["items", service, "n"]):
            assert fails(capsys, "pubsub", *argv) == \
                f"{service} is not a pubsub service of conf/config.toml (it has {GAMES})"
    assert not (site / "data" / "pubsub").exists()


def test_no_service_configured(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_config(site, 'pubsub = ["games"]', "pubsub = []")
    assert fails(capsys, "pubsub", "list", GAMES) == \
        f'{GAMES} is not a pubsub service of conf/config.toml (it has none: ' \
        'add pubsub = ["LABEL"] to a [[host]])'


def test_every_domain_of_the_host_has_the_service(site: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A host with two domains has games.DOMAIN for each; the two are distinct."""
    set_config(site, f'domains = ["{DOMAIN}"]', f'domains = ["{DOMAIN}", "verona.lit"]')
    assert run_main(capsys, "pubsub", "create", "games.verona.lit", "chess")[0] == 0
    assert run_main(capsys, "pubsub", "list", "games.verona.lit") == (0, "chess\n", "")
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "", "")


def test_bad_service_name(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fails(capsys, "pubsub", "list", "a b").startswith("'a b' is not a domain name: ")


@pytest.mark.parametrize("node", ["", "a\nb", "tab\there"])
def test_bad_node_name(site: Path, capsys: pytest.CaptureFixture[str], node: str) -> None:
    for action in ("create", "delete", "subscribers", "items"):
        assert fails(capsys, "pubsub", action, GAMES, node) == \
            f"{node!r} is not a node name (empty, or a control character)"
    assert not (site / "data" / "pubsub").exists()


@pytest.mark.parametrize("owner,message", [
    ("alice@wonderland.lit/phone",
     "--owner 'alice@wonderland.lit/phone' is not a bare JID (user@domain or a domain)"),
    ("@wonderland.lit", "--owner '@wonderland.lit' is not a valid JID: "),
    ("a b@wonderland.lit", "--owner 'a b@wonderland.lit' is not a valid JID: "),
])
def test_bad_owner(site: Path, capsys: pytest.CaptureFixture[str], owner: str,
                   message: str) -> None:
    assert fails(capsys, "pubsub", "create", GAMES, "chess", "--owner", owner).startswith(message)
    assert on_fs(site, lambda s: s.nodes(GAMES)) == []


@pytest.mark.parametrize("argv", [["pubsub"], ["pubsub", "frob", GAMES], ["pubsub", "list"],
                                  ["pubsub", "create", GAMES], ["pubsub", "items", GAMES],
                                  ["pubsub", "list", GAMES, "extra"]])
def test_usage_errors(site: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """A missing action or argument exits 2 in one line pointing at --help."""
    assert "--help" in fails(capsys, *argv, status=2)


def test_help_lists_the_actions(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(capsys, "pubsub", "--help")
    assert status == 0
    for action in ("list", "create", "delete", "subscribers", "items"):
        assert action in out
    assert "pubsub" in run_main(capsys, "--help")[1]


def test_outside_a_server_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert fails(capsys, "pubsub", "list", GAMES).startswith(
        "conf/config.toml: no such file (run this inside the directory")


def test_broken_config(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_config(site, 'pubsub = ["games"]', 'pubsub = ["games", "GAMES"]')
    assert fails(capsys, "pubsub", "list", GAMES) == \
        'conf/config.toml: host[0].pubsub[1]: "games" is listed twice'


def test_config_option_from_elsewhere(site: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """-c (before or after the action): the data dir is resolved as the server
    resolves it (beside conf/), not against the current directory."""
    monkeypatch.chdir(tmp_path)
    config = str(site / "conf" / "config.toml")
    assert run_main(capsys, "-c", config, "pubsub", "create", GAMES, "chess")[0] == 0
    assert run_main(capsys, "pubsub", "create", GAMES, "go", "-c", config)[0] == 0
    assert run_main(capsys, "pubsub", "-c", config, "list", GAMES) == (0, "chess\ngo\n", "")
    assert on_fs(site, lambda s: s.nodes(GAMES)) == ["chess", "go"]
    assert not (tmp_path / "data").exists()


def test_configured_storage_dir(site: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """[host.storage] dir elsewhere: the nodes are under DIR/pubsub, as the host's
    storage is."""
    store = tmp_path / "elsewhere"
    set_config(site, 'dir = "data"', f'dir = "{store}"')
    assert pubsub.fs_dir(load("conf/config.toml", check_certs=False).hosts[0]) == \
        store / "pubsub"
    assert run_main(capsys, "pubsub", "create", GAMES, "chess")[0] == 0
    assert (store / "pubsub").is_dir()
    assert not (site / "data" / "pubsub").exists()


@pytest.mark.parametrize("backend", ["memory", "null"])
def test_storage_out_of_reach(site: Path, capsys: pytest.CaptureFixture[str],
                              backend: str) -> None:
    """A standalone host whose storage is not on disk: one line, nothing written."""
    set_config(site, 'backend = "fs"', f'backend = "{backend}"')
    for argv in (["list", GAMES], ["create", GAMES, "n"]):
        assert fails(capsys, "pubsub", *argv) == \
            f'the nodes of {GAMES} are out of reach: its [[host]] has storage backend ' \
            f'"{backend}" (the pubsub commands need "fs", "sql" or a [cluster])'


def test_corrupt_node_file(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A node file the store cannot read: one line, exit 1, for every action."""
    assert on_fs(site, lambda s: s.create(GAMES, "chess", ALICE, {}))
    [path] = (site / "data" / "pubsub").glob("*/*.json")
    path.write_text("{not json")
    for argv in (["subscribers", GAMES, "chess"], ["items", GAMES, "chess"],
                 ["create", GAMES, "chess"]):
        assert "corrupt pubsub node 'chess'" in fails(capsys, "pubsub", *argv)


def test_unwritable_data_dir(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An I/O error (here: pubsub/ is a file) is one line, exit 1."""
    (site / "data" / "pubsub").write_text("")
    assert fails(capsys, "pubsub", "create", GAMES, "chess").startswith("pubsub create ")


# --------------------------------------------------------------------------
# cluster: the Redis store, against a real redis-server

@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for the module's cluster tests (no persistence)."""
    with redis_server(tmp_path_factory.mktemp("cli-pubsub-redis")) as client:
        yield url_of(client)


@pytest.fixture
def cluster_site(site: Path, redis_url: str) -> Iterator[str]:
    """The site with a [cluster] table on that Redis, its database flushed."""
    config = site / "conf" / "config.toml"
    config.write_text(config.read_text() + f'\n[cluster]\nurl = "{redis_url}"\n')
    on_redis(redis_url, lambda s: s.redis.flushall())
    yield redis_url


def on_redis(url: str, call: Callable[[Any], Awaitable[T]], **cluster: Any) -> T:
    """``await call(store)`` on the Redis pubsub store (the cluster's)."""
    async def go() -> T:
        client = connect(ClusterConfig(url=url, node="test", **cluster))
        try:
            return await call(open_pubsub("redis", redis=client))
        finally:
            await client.aclose()
    return asyncio.run(go())


@pytest.mark.redis
def test_cluster_create_list_delete(site: Path, cluster_site: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With [cluster], the commands work on Redis, not on the data directory."""
    url = cluster_site
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "", "")
    assert run_main(capsys, "pubsub", "create", GAMES, "chess") == \
        (0, f"Created node chess on {GAMES} (owner {GAMES})\n", "")
    assert run_main(capsys, "pubsub", "create", GAMES, "go", "--owner", ALICE)[0] == 0
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "chess\ngo\n", "")
    assert on_redis(url, lambda s: s.nodes(GAMES)) == ["chess", "go"]
    node = on_redis(url, lambda s: s.get(GAMES, "go"))
    assert node is not None and node.owner == ALICE
    assert fails(capsys, "pubsub", "create", GAMES, "go") == f"node 'go' already exists on {GAMES}"
    assert run_main(capsys, "pubsub", "delete", GAMES, "chess") == \
        (0, f"Deleted node chess of {GAMES}\n", "")
    assert fails(capsys, "pubsub", "delete", GAMES, "chess") == f"no node 'chess' on {GAMES}"
    assert run_main(capsys, "pubsub", "list", GAMES) == (0, "go\n", "")
    assert on_redis(url, lambda s: s.nodes(GAMES)) == ["go"]
    assert not (site / "data" / "pubsub").exists()


@pytest.mark.redis
def test_cluster_subscribers_and_items(cluster_site: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """What a node wrote through the store API (subscriptions, items) is what
    the commands print; times are Redis's."""
    async def fill(s: Any) -> None:
        await s.create(GAMES, "chess", ALICE, {})
        await s.subscribe(GAMES, "chess", BOB, "b1")
        await s.subscribe(GAMES, "chess", f"{ALICE}/desk", "a1")
        await s.publish(GAMES, "chess", "m1", b"<move>e4</move>", ALICE, None)
        await s.publish(GAMES, "chess", "m2", "<move>é5</move>".encode(), BOB, None)
    on_redis(cluster_site, fill)
    assert run_main(capsys, "pubsub", "subscribers", GAMES, "chess") == \
        (0, f"{ALICE}/desk a1\n{BOB} b1\n", "")
    when = {i.id: iso(i.published) for i in on_redis(cluster_site, lambda s: s.items(GAMES,
                                                                                     "chess"))}
    m2 = f"id: m2\npublisher: {BOB}\npublished: {when['m2']}\n<move>é5</move>\n"
    m1 = f"id: m1\npublisher: {ALICE}\npublished: {when['m1']}\n<move>e4</move>\n"
    assert run_main(capsys, "pubsub", "items", GAMES, "chess") == (0, f"{m2}\n{m1}", "")
    assert run_main(capsys, "pubsub", "items", GAMES, "chess", "--max", "1") == (0, m2, "")
    assert fails(capsys, "pubsub", "subscribers", GAMES, "nope") == f"no node 'nope' on {GAMES}"
    assert fails(capsys, "pubsub", "items", GAMES, "nope") == f"no node 'nope' on {GAMES}"


@pytest.mark.redis
def test_cluster_password_and_db(site: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """[cluster] password and db reach Redis; a wrong password is one line
    without the password."""
    with redis_server(tmp_path, password="hunter2") as client:
        port = client.connection_pool.connection_kwargs["port"]
        url = f"redis://127.0.0.1:{port}"
        config = site / "conf" / "config.toml"
        config.write_text(config.read_text() +
                          f'\n[cluster]\nurl = "{url}"\npassword = "hunter2"\ndb = 3\n')
        assert run_main(capsys, "pubsub", "create", GAMES, "chess")[0] == 0
        assert on_redis(url, lambda s: s.nodes(GAMES), password="hunter2", db=3) == ["chess"]
        assert on_redis(url, lambda s: s.nodes(GAMES), password="hunter2", db=0) == []
        set_config(site, '"hunter2"', '"wrong"')
        err = fails(capsys, "pubsub", "list", GAMES)
    assert err.startswith(f"cannot reach {url}: ")
    assert "hunter2" not in err and "wrong" not in err


@pytest.mark.redis
def test_cluster_unreachable(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens: one line ``cannot reach URL: REASON`` with the URL's
    password hidden, exit 1, for every action; nothing falls back to the fs."""
    port = free_port()
    config = site / "conf" / "config.toml"
    config.write_text(config.read_text() +
                      f'\n[cluster]\nurl = "redis://:s3cret@127.0.0.1:{port}/0"\n')
    for argv in (["list", GAMES], ["create", GAMES, "n"], ["delete", GAMES, "n"],
                 ["subscribers", GAMES, "n"], ["items", GAMES, "n"]):
        err = fails(capsys, "pubsub", *argv)
        assert err.startswith(f"cannot reach redis://:***@127.0.0.1:{port}/0: "), err
        assert "s3cret" not in err
    assert not (site / "data" / "pubsub").exists()
