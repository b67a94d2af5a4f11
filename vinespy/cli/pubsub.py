"""``vinespy pubsub list|create|delete|subscribers|items SERVICE [NODE]``.

They manage the nodes of a pubsub service (``games.wonderland.lit`` for
``pubsub = ["games"]`` in the host serving wonderland.lit) in the storage
the server uses (:func:`~vinespy.storage.pubsub.store_for`): the host's
database for ``backend = "sql"``, else Redis when the config has a
``[cluster]`` table, else the fs store under the host's data directory
(``DIR/pubsub``). Like the account
commands, they work while the server runs.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

from ..config import Config, HostConfig, load
from ..jid import JID, JIDError, prep_domain
from ..storage import StorageError
# The pubsub store of a host, as the server chooses it (no redis import).
from ..storage.pubsub import store_for
from . import PROG, CLIError, Parser, existing_paths, one_line

if TYPE_CHECKING:
    from ..storage.pubsub import PubSubStore

T = TypeVar("T")

PUBSUB_TIMEOUT = 10.0       # s a pubsub command waits for Redis


def add_parser(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """``vinespy pubsub ACTION SERVICE [NODE]``."""
    p = sub.add_parser(
        "pubsub", parents=[common], help="list, create and delete pubsub nodes (XEP-0060)",
        description="Manage the nodes of a pubsub service: SERVICE is a service domain such "
        'as games.wonderland.lit (pubsub = ["games"] in the [[host]] serving '
        "wonderland.lit). Works while the server runs, on the storage it uses: the host's "
        'database for backend = "sql", else Redis with a [cluster] table, else the '
        "host's data directory.")
    p.set_defaults(handler=cmd_pubsub_usage)
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    service_help = "a pubsub service domain of the config, e.g. games.wonderland.lit"
    for name, handler, what, with_node in (
            ("list", cmd_pubsub_list, "the service's node names, one per line", False),
            ("create", cmd_pubsub_create, "create a node", True),
            ("delete", cmd_pubsub_delete, "delete a node with its items and subscriptions",
             True),
            ("subscribers", cmd_pubsub_subscribers,
             "a node's subscriptions: JID and subscription id, one per line", True),
            ("items", cmd_pubsub_items, "a node's items, newest first, one block each",
             True)):
        a = actions.add_parser(name, parents=[common], help=what,
                               description=f"{what[0].upper()}{what[1:]}.")
        a.add_argument("service", metavar="SERVICE", help=service_help)
        if with_node:
            a.add_argument("node", metavar="NODE", help="the node's name (NodeID)")
        a.set_defaults(handler=handler)
        if name == "create":
            a.add_argument("--owner", metavar="JID",
                           help="the node's owner, a bare JID (default: the service itself)")
        elif name == "items":
            a.add_argument("--max", type=positive_int, default=None, metavar="N",
                           help="show only the newest N items")


@dataclass(frozen=True)
class PubSubTarget:
    """The pubsub service a command names, with its config and host."""

    config: Config
    service: str                # the service domain, prepared
    host: HostConfig


def positive_int(text: str) -> int:
    """``--max N``: an integer of at least 1 (argparse type)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text!r}")
    return n


def cmd_pubsub_usage(args: argparse.Namespace) -> int:
    """``vinespy pubsub`` without an action."""
    raise CLIError(f"pubsub needs an action: list, create, delete, subscribers or items "
                   f"(see '{PROG} pubsub --help')", status=2)


def cmd_pubsub_list(args: argparse.Namespace) -> int:
    """``vinespy pubsub list SERVICE``: the node names, one per line, sorted."""
    target = pubsub_target(args)
    for name in run_on_pubsub(target, lambda store: store.nodes(target.service)):
        print(name)
    return 0


def cmd_pubsub_create(args: argparse.Namespace) -> int:
    """``vinespy pubsub create SERVICE NODE [--owner JID]``."""
    node = node_name(args.node)
    target = pubsub_target(args)
    owner = owner_jid(args.owner) if args.owner is not None else target.service
    if not run_on_pubsub(target, lambda store: store.create(target.service, node, owner, {})):
        raise CLIError(f"node {node!r} already exists on {target.service}")
    print(f"Created node {node} on {target.service} (owner {owner})")
    return 0


def cmd_pubsub_delete(args: argparse.Namespace) -> int:
    """``vinespy pubsub delete SERVICE NODE``: the node, its items and subscriptions."""
    node = node_name(args.node)
    target = pubsub_target(args)
    if not run_on_pubsub(target, lambda store: store.delete(target.service, node)):
        raise _no_node(node, target)
    print(f"Deleted node {node} of {target.service}")
    return 0


def cmd_pubsub_subscribers(args: argparse.Namespace) -> int:
    """``vinespy pubsub subscribers SERVICE NODE``: ``JID SUBID`` per line, sorted."""
    node = node_name(args.node)
    target = pubsub_target(args)

    async def read(store: PubSubStore) -> dict[str, str]:
        if await store.get(target.service, node) is None:
            raise _no_node(node, target)
        return await store.subscriptions(target.service, node)

    for jid, subid in sorted(run_on_pubsub(target, read).items()):
        print(f"{jid} {subid}")
    return 0


def cmd_pubsub_items(args: argparse.Namespace) -> int:
    """``vinespy pubsub items SERVICE NODE [--max N]``: newest first, one block
    each (``id:``, ``publisher:``, ``published:`` in ISO 8601 UTC, then the
    payload's XML), blocks separated by an empty line."""
    node = node_name(args.node)
    target = pubsub_target(args)

    async def read(store: PubSubStore) -> list[str]:
        if await store.get(target.service, node) is None:
            raise _no_node(node, target)
        return [item_block(item.id, item.publisher, item.published, item.payload)
                for item in await store.items(target.service, node, max_items=args.max)]

    print("\n".join(run_on_pubsub(target, read)), end="")
    return 0


def item_block(item_id: str, publisher: str, published_ms: int, payload: bytes) -> str:
    """One item as ``items`` prints it, ending with a newline."""
    when = datetime.fromtimestamp(published_ms / 1000, tz=timezone.utc)
    xml = payload.decode("utf-8", "replace").strip() or "(no payload)"
    return (f"id: {item_id}\npublisher: {publisher}\n"
            f"published: {when.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}\n"
            f"{xml}\n")


def _no_node(node: str, target: PubSubTarget) -> CLIError:
    return CLIError(f"no node {node!r} on {target.service}")


def node_name(text: str) -> str:
    """A node name (XEP-0060 NodeID) given on the command line: not empty, no
    control characters (XML cannot carry them)."""
    if not text or any(ord(c) < 0x20 or ord(c) == 0x7f for c in text):
        raise CLIError(f"{text!r} is not a node name (empty, or a control character)")
    return text


def owner_jid(text: str) -> str:
    """``--owner``: a bare JID (user@domain or a domain), prepared."""
    try:
        jid = JID.parse(text)
    except JIDError as exc:
        raise CLIError(f"--owner {text!r} is not a valid JID: {exc}") from None
    if not jid.is_bare:
        raise CLIError(f"--owner {text!r} is not a bare JID (user@domain or a domain)")
    return str(jid)


def pubsub_target(args: argparse.Namespace) -> PubSubTarget:
    """The service ``args.service`` names and the host it belongs to; one
    line if the config has no such service."""
    try:
        service = prep_domain(args.service)
    except JIDError as exc:
        raise CLIError(f"{args.service!r} is not a domain name: {exc}") from None
    existing_paths(args)
    config = load(args.config, check_certs=False)
    services = config.pubsub_services()
    host = services.get(service)
    if host is None:
        known = (f"it has {', '.join(services)}" if services
                 else 'it has none: add pubsub = ["LABEL"] to a [[host]]')
        raise CLIError(f"{service} is not a pubsub service of {args.config} ({known})")
    return PubSubTarget(config, service, host)


def run_on_pubsub(target: PubSubTarget, call: Callable[[PubSubStore], Awaitable[T]]) -> T:
    """``await call(store)`` on the pubsub store the server of ``target.config``
    uses, in a fresh event loop; the store (and its Redis client) closed after.

    A ``backend = "sql"`` host: the sql store on its database (an
    unreachable one is one StorageError line, the password ``***``). Else
    with ``[cluster]``: the Redis store (one line ``cannot reach URL: REASON``
    if Redis does not answer; the URL without its password). Standalone: the
    fs store in the host's data directory; a host whose storage is not on
    disk (memory, null) keeps its nodes out of this process's reach.
    """
    backend = target.host.storage.backend
    if target.config.cluster is not None and backend != "sql":
        return asyncio.run(_on_redis_pubsub(target, call))
    if backend not in ("fs", "sql"):
        raise CLIError(f"the nodes of {target.service} are out of reach: its [[host]] has "
                       f'storage backend "{backend}" (the pubsub commands need "fs", "sql" '
                       "or a [cluster])")

    async def go() -> T:
        store = store_for(target.config, target.host)
        try:
            return await call(store)
        except ValueError as exc:           # an argument the store refuses
            raise CLIError(one_line(str(exc))) from None
        finally:
            await store.close()
    return asyncio.run(go())


async def _on_redis_pubsub(target: PubSubTarget,
                           call: Callable[[PubSubStore], Awaitable[T]]) -> T:
    from redis.exceptions import RedisError     # only with a [cluster] table
    from ..cluster import status
    cfg = target.config.cluster
    assert cfg is not None
    url = status.where(cfg)

    def unreachable(exc: BaseException) -> CLIError:
        reason = one_line(str(exc)) or type(exc).__name__
        return CLIError(f"cannot reach {url}: {status.hide_passwords(reason, cfg)}")

    try:
        store = store_for(target.config, target.host)
    except ValueError as exc:                   # a URL redis-py cannot parse
        raise unreachable(exc) from None
    try:
        try:
            await asyncio.wait_for(getattr(store, "redis").ping(), PUBSUB_TIMEOUT)
        except asyncio.TimeoutError:
            raise CLIError(f"cannot reach {url}: no answer within {PUBSUB_TIMEOUT:g} s") \
                from None
        except (RedisError, OSError, ValueError) as exc:
            raise unreachable(exc) from None
        try:
            return await call(store)
        except StorageError as exc:             # Redis went away mid-way
            raise CLIError(status.hide_passwords(one_line(str(exc)), cfg)) from None
        except ValueError as exc:               # an argument the store refuses
            raise CLIError(one_line(str(exc))) from None
    finally:
        await store.close()                     # and its Redis client
