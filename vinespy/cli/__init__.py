"""The ``vinespy`` command: init, start, stop, restart, status, cert, accounts.

Mirrors the Ruby Vines command line. ``vinespy init DOMAIN`` makes a
directory holding ``conf/config.toml``, a self-signed certificate, ``data/``,
``log/`` and ``pid/``; every other command then runs inside that directory
(or is given ``-c PATH``)::

    vinespy init wonderland.lit && cd wonderland.lit
    vinespy start -d            # returns once the listeners accept connections
    vinespy register hatter@wonderland.lit
    vinespy status              # exit 0 running, 3 not running (LSB)
    vinespy stop

``vinespy start --workers N`` (N > 1, with a ``[cluster]`` table) runs N
worker processes, each a cluster node sharing the listening ports
(SO_REUSEPORT), under one supervising process that holds the pid file,
forwards SIGTERM/SIGINT and replaces a worker that dies (:class:`Workers`).

``log/vinespy.log`` and ``pid/vinespy.pid`` live where the config's relative
paths start (:func:`vinespy.config.base_dir`): beside ``conf/`` when the
config is ``.../conf/config.toml``, else beside the config file.

``register``, ``passwd`` and ``unregister`` write the host's storage directly,
so they also work while the server runs: the fs backend replaces one file per
account atomically, which is how Vines's ``vines register`` worked too.

``pubsub list|create|delete|subscribers|items SERVICE [NODE]`` manage the
nodes of a pubsub service (``games.wonderland.lit`` for ``pubsub =
["games"]`` in the host serving wonderland.lit) in the storage the server
uses: Redis when the config has a ``[cluster]`` table, else the fs store
under the host's data directory (``DIR/pubsub``).

Every expected failure prints one line, ``vinespy: <reason>``, on stderr and
exits non-zero; only a bug shows a traceback. ``main`` returns the exit
status: the console script and ``python -m vinespy`` pass it to
:func:`sys.exit`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import getpass
import json
import logging
import os
import re
import secrets
import select
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, NoReturn, Sequence, TypeVar

from .. import __version__
from ..accounts import AccountError, create_user, delete_user, set_password
from ..config import ClusterConfig, Config, ConfigError, HostConfig, base_dir, load
from ..jid import JID, JIDError, prep_domain
from ..storage import Contact, Storage, StorageError, open_storage
# The pubsub store of a host, as the server chooses it (no redis import).
from ..storage.pubsub import store_for
from ..tls import make_self_signed

if TYPE_CHECKING:
    from ..storage.pubsub import PubSubStore

log = logging.getLogger("vinespy.cli")

PROG = "vinespy"
DEFAULT_CONFIG = "conf/config.toml"
START_TIMEOUT = 30.0        # s the parent of a daemon waits for "listening"
STOP_TIMEOUT = 15.0         # s `stop` waits for the process to exit
STATUS_TIMEOUT = 10.0       # s `status` waits for Redis to list the cluster's nodes
MAX_WORKERS = 64
WORKER_RESTART_DELAY = 1.0  # s before a worker that died is replaced
WORKER_RESTARTS = 5         # at most this many replacements of one worker...
WORKER_RESTART_WINDOW = 60.0    # ...within this many seconds; then it stays dead
WORKER_KILL_AFTER = 10.0    # s after a stop before the remaining workers get SIGKILL
EXAMPLE_USERS = ("alice", "arthur")

# LSB init-script exit codes for `status` (LSB core, "Init Script Actions").
STATUS_RUNNING = 0
STATUS_NOT_RUNNING = 3
STATUS_UNKNOWN = 4

T = TypeVar("T")


class CLIError(Exception):
    """An operator error: printed as ``vinespy: <message>``, exit ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# Errors whose message is meant for the operator: one line, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    CLIError, ConfigError, AccountError, StorageError, JIDError,
)


# --------------------------------------------------------------------------
# Entry point and argument parsing

def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (never raises for user errors)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:           # --help, --version: argparse exits 0
        return exc.code if isinstance(exc.code, int) else 0
    except CLIError as exc:             # usage error, see _Parser.error
        return _fail(exc)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        return _fail(CLIError(f"no command given (see '{PROG} --help')", status=2))
    try:
        return handler(args)
    except USER_ERRORS as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _fail(exc: Exception) -> int:
    print(f"{PROG}: {one_line(str(exc)) or type(exc).__name__}", file=sys.stderr)
    return exc.status if isinstance(exc, CLIError) else 1


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see '{self.prog} --help')", status=2)


def build_parser() -> argparse.ArgumentParser:
    """The parser for every command; each subparser sets ``handler``."""
    parser = _Parser(prog=PROG, description="An XMPP server on asyncio, in the spirit of Vines.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    config_help = f"the configuration file (default: {DEFAULT_CONFIG})"
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="PATH",
                        help=config_help)
    # Also accepted after the command name (`vinespy start -c x.toml`); SUPPRESS
    # keeps the subparser from resetting a value given before it.
    common = _Parser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="PATH",
                        help=config_help)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("init", help="make DOMAIN/ with a config, a certificate and two users",
                       description="Create ./DOMAIN/ holding conf/config.toml, a self-signed "
                       "certificate, data/, log/, pid/ and the example users alice and arthur.")
    p.add_argument("domain", metavar="DOMAIN")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("start", parents=[common], help="run the server",
                       description="Run the server, in the foreground unless -d is given.")
    p.add_argument("-d", "--daemonize", action="store_true",
                   help="run in the background; return once it is listening")
    p.add_argument("--workers", type=worker_count, default=1, metavar="N",
                   help=f"run N (1-{MAX_WORKERS}) worker processes sharing the ports, each "
                   "a node of the [cluster] (default: 1, no supervisor)")
    p.set_defaults(handler=cmd_start)

    p = sub.add_parser("stop", parents=[common], help="stop the running server")
    p.set_defaults(handler=cmd_stop)

    p = sub.add_parser("restart", parents=[common], help="stop the server, then start -d")
    p.add_argument("--workers", type=worker_count, default=None, metavar="N",
                   help="as for start (default: as many as the running server has)")
    p.set_defaults(handler=cmd_restart)

    p = sub.add_parser("status", parents=[common],
                       help="exit 0 if the server runs, 3 if it does not")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("cert", parents=[common], help="make a self-signed certificate",
                       description="Write DOMAIN.crt and DOMAIN.key into the config's certs "
                       "directory (./conf/certs without a config).")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("--force", action="store_true", help="replace an existing certificate")
    p.set_defaults(handler=cmd_cert)

    for name, handler, what in (("register", cmd_register, "create an account"),
                                ("passwd", cmd_passwd, "change an account's password"),
                                ("unregister", cmd_unregister, "delete an account")):
        p = sub.add_parser(name, parents=[common], help=what,
                           description=f"{what[0].upper()}{what[1:]}; works while the "
                           "server runs.")
        p.add_argument("jid", metavar="JID", help="user@domain, a domain this config serves")
        if name != "unregister":
            p.add_argument("--password-file", metavar="FILE",
                           help="read the password from the first line of FILE "
                           "('-' = standard input) instead of asking")
        p.set_defaults(handler=handler)

    _add_pubsub_parser(sub, common)
    return parser


def _add_pubsub_parser(sub: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    """``vinespy pubsub ACTION SERVICE [NODE]``."""
    p = sub.add_parser(
        "pubsub", parents=[common], help="list, create and delete pubsub nodes (XEP-0060)",
        description="Manage the nodes of a pubsub service: SERVICE is a service domain such "
        'as games.wonderland.lit (pubsub = ["games"] in the [[host]] serving '
        "wonderland.lit). Works while the server runs, on the storage it uses: Redis with a "
        "[cluster] table, else the host's data directory.")
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


# --------------------------------------------------------------------------
# init and cert

CONFIG_TEMPLATE = """\
# vinespy configuration for {domain}, written by `vinespy init`.
# Run `vinespy start` inside {dirname}/ (the directory holding conf/), or pass -c.
# Relative paths (certs, the data dir) start at that directory.

log = "info"                    # debug | info | warning | error
certs = "conf/certs"            # DOMAIN.crt + DOMAIN.key for each domain

[[host]]                        # one table per group of domains sharing settings
domains = [{domain_toml}]
private_storage = false         # XEP-0049 private XML storage
cross_domain_messages = false   # may users message the other hosts served here?
pubsub = []                     # ["games"] -> a pubsub service at games.{domain} (XEP-0060);
                                # its nodes: `vinespy pubsub list games.{domain}`
components = {{}}                 # {{ tea = "secr3t" }} -> tea.{domain} (XEP-0114)

# [host.options.pubsub]         # limits of each pubsub service (the defaults):
# max_items = 100               # the most items a node may keep (1-100000)
# max_nodes = 1000              # nodes per service
# max_payload = 65536           # bytes of one item's payload
# max_subscriptions_per_node = 1000  # subscribed JIDs per node
# max_subscriptions_per_jid = 10  # of them with one bare JID (its bare and full JIDs)

[host.storage]
backend = "fs"                  # fs | memory | null
dir = "data"                    # accounts and rosters; `vinespy register` works while running

[client]                        # client-to-server connections (c2s)
address = "0.0.0.0"
port = 5222
tls = "required"                # required | optional
direct_tls_port = 0             # XEP-0368 direct TLS (usually 5223); 0 = off
max_stanza_size = 65536
max_resources_per_account = 5

# [cluster]                     # uncomment to share users across servers through Redis
# url = "redis://127.0.0.1:6379/0"  # or rediss:// (TLS), unix:///PATH.sock
# password = "..."              # overrides the URL's; absent: the URL's
# db = 0                        # overrides the URL's; absent: the URL's
# node = "HOSTNAME-5222"        # unique, stable id; absent: host name + client port
# heartbeat = 1.0               # s between heartbeats
# dead_after = 5.0              # s without one before a node counts as dead (>= 3 x heartbeat)
# route_cache_ttl = 10.0        # s a remote user's node is cached; 0 = no cache
# inbox_maxlen = 100000         # about how many messages a node's Redis inbox keeps
# tls_ca = "conf/redis-ca.pem"  # rediss:// only: the CA of Redis's certificate
"""

# RFC 7622 §3.2: a domainpart is a DNS host name (IDNA2008) or an IP literal;
# init also makes a directory and file names of it, so nothing else gets in.
_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def check_domain(text: str) -> str:
    """``text`` prepared as a JID domainpart that is a host name or IP literal."""
    domain = prep_domain(text)
    if domain.startswith("["):                  # an IPv6 literal, checked by prep_domain
        return domain
    try:
        ascii_form = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise JIDError(f"{text!r} is not a valid internationalized domain name") from None
    if not _HOSTNAME.fullmatch(ascii_form):
        raise JIDError(f"{text!r} is not a host name (letters, digits, '-' and '.')")
    return domain


def render_config(domain: str, dirname: str) -> str:
    """The config file ``init`` writes for ``domain``."""
    return CONFIG_TEMPLATE.format(domain=domain, dirname=dirname,
                                  domain_toml=json.dumps(domain, ensure_ascii=False))


def cmd_init(args: argparse.Namespace) -> int:
    """``vinespy init DOMAIN``: a ready-to-start server directory."""
    domain = check_domain(args.domain)
    root = Path(domain)
    try:
        root.mkdir()
    except FileExistsError:
        raise CLIError(f"{root} already exists") from None
    except OSError as exc:
        raise CLIError(f"cannot create {root}: {exc.strerror}") from None
    try:
        passwords = _populate(root, domain)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)     # nothing half-made is left behind
        raise
    width = max(len(f"{u}@{domain}") for u in EXAMPLE_USERS)
    print(f"Created {root}/ (config, certificate, data).")
    for user, password in passwords.items():
        print(f"  {user:<{width}}  password: {password}")
    print(f"Start it:  cd {root} && {PROG} start")
    print(f"Then log in with any XMPP client as {EXAMPLE_USERS[0]}@{domain} "
          "(server 127.0.0.1, port 5222; the certificate is self-signed).")
    return 0


def _populate(root: Path, domain: str) -> dict[str, str]:
    """Fill a fresh ``root``; return {bare JID: password} of the example users."""
    try:
        conf = root / "conf"
        conf.mkdir()
        for name in ("data", "log", "pid"):
            _private_dir(root / name)
        config_path = conf / "config.toml"
        _write_private(config_path, render_config(domain, root.name))
        make_self_signed(domain, conf / "certs")
    except OSError as exc:
        raise CLIError(f"cannot write {root}: {exc}") from None
    # Loading what was just written proves the template and the certificate
    # valid, and puts the users exactly where the server will look for them.
    host = load(config_path).host_for(domain)
    assert host is not None
    passwords = {f"{u}@{domain}": secrets.token_urlsafe(12) for u in EXAMPLE_USERS}
    _run_on_storage(host, lambda s: _make_example_users(s, passwords))
    return passwords


async def _make_example_users(storage: Storage, passwords: dict[str, str]) -> None:
    """Create the users; each has every other in its roster with subscription both."""
    users = [await create_user(storage, JID.parse(j), pw) for j, pw in passwords.items()]
    for user in users:
        for other in users:
            if other is not user:
                user.roster[other.jid] = Contact(other.jid, subscription="both")
        await storage.save_user(user)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)                   # mkdir's mode is filtered through the umask


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` (it must not exist) readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)
        f.write(text)


def cmd_cert(args: argparse.Namespace) -> int:
    """``vinespy cert DOMAIN [--force]``: a self-signed certificate for DOMAIN."""
    domain = check_domain(args.domain)
    config_path = Path(args.config)
    if config_path.exists():
        certs = load(config_path, check_certs=False).certs
    elif args.config != DEFAULT_CONFIG:
        raise CLIError(f"{config_path}: no such file")
    else:
        certs = Path("conf/certs")
    try:
        certs.mkdir(parents=True, exist_ok=True)
        crt, key = make_self_signed(domain, certs, overwrite=args.force)
    except FileExistsError as exc:
        name = exc.filename or f"the certificate of {domain} in {certs}"
        raise CLIError(f"{name} already exists; add --force to replace it") from None
    except OSError as exc:
        raise CLIError(f"cannot write to {certs}: {exc.strerror or exc}") from None
    print(f"Wrote {crt}")
    print(f"Wrote {key}")
    return 0


# --------------------------------------------------------------------------
# Accounts

def cmd_register(args: argparse.Namespace) -> int:
    """``vinespy register JID``: create an account."""
    jid, host = _account_target(args)
    password = read_password(args.password_file, jid)
    _run_on_storage(host, lambda s: create_user(s, jid, password))
    print(f"Registered {jid}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """``vinespy passwd JID``: change an account's password."""
    jid, host = _account_target(args)
    password = read_password(args.password_file, jid)
    _run_on_storage(host, lambda s: set_password(s, jid, password))
    print(f"Changed the password of {jid}")
    return 0


def cmd_unregister(args: argparse.Namespace) -> int:
    """``vinespy unregister JID``: delete an account."""
    jid, host = _account_target(args)
    _run_on_storage(host, lambda s: delete_user(s, jid))
    print(f"Deleted {jid}")
    return 0


def _account_target(args: argparse.Namespace) -> tuple[JID, HostConfig]:
    """The bare user JID of the command and the host that serves its domain."""
    try:
        jid = JID.parse(args.jid)
    except JIDError as exc:
        raise CLIError(f"{args.jid!r} is not a valid JID: {exc}") from None
    if not jid.local or not jid.is_bare:
        raise CLIError(f"{args.jid!r} is not a user's bare JID (user@domain)")
    _existing_paths(args)
    config = load(args.config, check_certs=False)
    host = config.host_for(jid.domain)
    if host is None:
        raise CLIError(f"{jid.domain} is not served here")
    return jid, host


def _run_on_storage(host: HostConfig, call: Callable[[Storage], Awaitable[T]]) -> T:
    """``await call(storage)`` on ``host``'s storage in a fresh event loop; close it."""
    async def go() -> T:
        # Built inside the loop: a backend may bind its connections to it.
        storage = open_storage(host.storage.backend, host.storage.options)
        try:
            return await call(storage)
        finally:
            await storage.close()
    return asyncio.run(go())


def read_password(source: str | None, jid: JID) -> str:
    """The password from ``source`` (a file, ``-`` = stdin) or asked twice."""
    if source is not None:
        try:
            if source == "-":
                line = sys.stdin.readline()
            else:
                with open(source, encoding="utf-8") as f:
                    line = f.readline()
        except OSError as exc:
            raise CLIError(f"{source}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise CLIError(f"{source}: not UTF-8 text") from None
        password = line.rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"Password for {jid}: ")
            if password and getpass.getpass("Again: ") != password:
                raise CLIError("the passwords do not match")
        except EOFError:
            raise CLIError("no password given (use --password-file FILE or '-')") from None
    if not password:
        raise CLIError("the password is empty")
    return password


# --------------------------------------------------------------------------
# pubsub (XEP-0060) nodes

PUBSUB_TIMEOUT = 10.0       # s a pubsub command waits for Redis


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
    _existing_paths(args)
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

    With ``[cluster]``: the Redis store (one line ``cannot reach URL: REASON``
    if Redis does not answer; the URL without its password). Standalone: the
    fs store in the host's data directory; a host whose storage is not on
    disk (memory, null) keeps its nodes out of this process's reach.
    """
    if target.config.cluster is not None:
        return asyncio.run(_on_redis_pubsub(target, call))
    backend = target.host.storage.backend
    if backend != "fs":
        raise CLIError(f"the nodes of {target.service} are out of reach: its [[host]] has "
                       f'storage backend "{backend}" (the pubsub commands need "fs" or a '
                       "[cluster])")

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
    url = status.safe_url(cfg.url)

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


# --------------------------------------------------------------------------
# start, stop, restart, status

@dataclass(frozen=True)
class RunPaths:
    """Where a server's pid file and log live, derived from the config path."""

    base: Path

    @classmethod
    def for_config(cls, config_path: str | Path) -> RunPaths:
        """Beside ``conf/``: the directory the config's relative paths start at."""
        return cls(base_dir(config_path))

    @property
    def pid_file(self) -> Path:
        return self.base / "pid" / "vinespy.pid"

    @property
    def log_file(self) -> Path:
        return self.base / "log" / "vinespy.log"

    @property
    def workers_file(self) -> Path:
        return _workers_file(self.pid_file)


def worker_count(text: str) -> int:
    """``--workers N``: an integer from 1 to MAX_WORKERS (argparse type)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {MAX_WORKERS}, got {text!r}")
    return n


def _check_workers(config: Config, workers: int, config_path: str) -> None:
    if workers > 1 and config.cluster is None:
        raise CLIError(f"--workers {workers} needs a [cluster] table in {config_path}: "
                       "workers are cluster nodes sharing the ports through Redis")


def cmd_start(args: argparse.Namespace) -> int:
    """``vinespy start [-d] [--workers N]``: serve until SIGTERM/SIGINT."""
    paths = _existing_paths(args)
    config = load(args.config)
    workers = getattr(args, "workers", None) or 1
    _check_workers(config, workers, args.config)
    pid = running_pid(paths.pid_file, clean=True)
    if pid is not None:
        raise CLIError(f"already running (pid {pid})")
    for d in (paths.pid_file.parent, paths.log_file.parent):
        try:
            _private_dir(d)
        except OSError as exc:
            raise CLIError(f"cannot create {d}: {exc.strerror}") from None
    if args.daemonize:
        return _start_daemon(config, paths, workers)
    setup_logging(config.log, None)
    acquire_pid_file(paths.pid_file)
    try:
        _record_workers(paths, workers)
        return _serve(config, None, workers)
    except OSError as exc:              # most often: the port is taken
        raise CLIError(f"cannot start: {exc}") from None
    finally:
        _forget_workers(paths.workers_file)
        release_pid_file(paths.pid_file)


def cmd_stop(args: argparse.Namespace) -> int:
    """``vinespy stop``: SIGTERM the server and wait for it to exit."""
    paths = _existing_paths(args)
    if not stop_server(paths.pid_file):
        raise CLIError("not running")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    """``vinespy restart``: stop if running, then ``start -d``.

    The config is checked first: a typo in it leaves the running server alone.
    """
    paths = _existing_paths(args)
    config = load(args.config)
    if args.workers is None:
        args.workers = _running_workers(paths)
    _check_workers(config, args.workers, args.config)
    stop_server(paths.pid_file)
    args.daemonize = True
    return cmd_start(args)


def cmd_status(args: argparse.Namespace) -> int:
    """``vinespy status``: LSB exit status 0 running, 3 not running."""
    try:
        paths = _existing_paths(args)
    except CLIError as exc:
        exc.status = STATUS_UNKNOWN
        raise
    pid = running_pid(paths.pid_file)
    if pid is None:
        print(f"{PROG} is not running")
        status = STATUS_NOT_RUNNING
    else:
        print(f"{PROG} is running (pid {pid})")
        status = STATUS_RUNNING
    try:
        config = load(args.config, check_certs=False)
    except ConfigError as exc:          # the local answer stands; the rest needs the config
        print(f"{PROG}: {one_line(str(exc))}", file=sys.stderr)
        return status
    if config.cluster is not None:
        print_cluster(config.cluster)
    return status


def print_cluster(cfg: ClusterConfig) -> None:
    """One line for the cluster, then one per node registered in Redis; one
    line ``cluster: cannot reach URL: REASON`` if Redis does not answer.
    The URL is printed without its password."""
    from ..cluster import status         # imports redis: only with a [cluster] table
    from redis.exceptions import RedisError
    url = status.safe_url(cfg.url)
    try:
        nodes = asyncio.run(asyncio.wait_for(status.nodes(cfg), STATUS_TIMEOUT))
    except asyncio.TimeoutError:
        print(f"cluster: cannot reach {url}: no answer within {STATUS_TIMEOUT:g} s")
        return
    except (RedisError, OSError, ValueError) as exc:
        reason = one_line(str(exc)) or type(exc).__name__
        print(f"cluster: cannot reach {url}: {status.hide_passwords(reason, cfg)}")
        return
    alive = sum(n.alive for n in nodes)
    print(f"cluster {url}: {len(nodes)} node{'' if len(nodes) == 1 else 's'}, {alive} alive")
    for node in nodes:
        print(node.line())


def _existing_paths(args: argparse.Namespace) -> RunPaths:
    """The run paths, refusing a config path that names nothing (wrong directory)."""
    if not Path(args.config).is_file():
        raise CLIError(f"{args.config}: no such file (run this inside the directory "
                       f"made by '{PROG} init DOMAIN', or pass -c PATH)")
    return RunPaths.for_config(args.config)


def stop_server(pid_file: Path) -> bool:
    """SIGTERM the server named by ``pid_file`` and wait; False if none runs."""
    pid = running_pid(pid_file, clean=True)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise CLIError(f"not allowed to signal pid {pid}") from None
    deadline = time.monotonic() + STOP_TIMEOUT
    while process_alive(pid):
        if time.monotonic() > deadline:
            raise CLIError(f"pid {pid} did not exit within {STOP_TIMEOUT:g} s")
        time.sleep(0.05)
    release_pid_file(pid_file, pid)     # it removes its own; this is for a crash
    _forget_workers(_workers_file(pid_file), pid)
    print(f"{PROG} stopped (pid {pid})")
    return True


def _serve(config: Config, ready: Callable[[], None] | None, workers: int = 1) -> int:
    if workers > 1:
        return Workers(config, workers, ready).run()
    from .. import server            # the whole server: only `start` needs it
    return server.run(config, ready=ready)


# ``pid/vinespy.workers`` holds "PID N" while the supervisor PID runs N > 1
# workers, so that ``restart`` starts as many again. (The pid file itself
# stays a bare pid, as init systems read it.)

def _workers_file(pid_file: Path) -> Path:
    return pid_file.with_name("vinespy.workers")


def _record_workers(paths: RunPaths, workers: int) -> None:
    if workers > 1:
        paths.workers_file.write_text(f"{os.getpid()} {workers}\n", encoding="ascii")


def _forget_workers(workers_file: Path, pid: int | None = None) -> None:
    """Remove ``workers_file`` if it is ``pid``'s (default: this process's)."""
    if _read_workers(workers_file)[0] == (os.getpid() if pid is None else pid):
        workers_file.unlink(missing_ok=True)


def _read_workers(workers_file: Path) -> tuple[int | None, int]:
    """(supervisor pid, worker count) from ``workers_file``; (None, 1) if unusable."""
    try:
        pid, n = workers_file.read_text(encoding="ascii").split()
        return int(pid), (int(n) if 1 <= int(n) <= MAX_WORKERS else 1)
    except (OSError, UnicodeDecodeError, ValueError):
        return None, 1


def _running_workers(paths: RunPaths) -> int:
    """How many workers the running server has (1 when none runs)."""
    pid = running_pid(paths.pid_file)
    recorded, n = _read_workers(paths.workers_file)
    return n if pid is not None and recorded == pid else 1


# ---- daemon

def _start_daemon(config: Config, paths: RunPaths, workers: int = 1) -> int:
    """Double fork; return in the caller once the daemon listens or has failed.

    No event loop exists yet (forking one is undefined). The daemon reports
    through a pipe: ``ok`` once its listeners are bound, else one error line.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    child = os.fork()
    if child:
        os.close(wfd)
        os.waitpid(child, 0)            # the middle process exits at once
        return _await_daemon(rfd, paths, workers)
    # Middle process: leave the terminal's session, then fork the daemon, so
    # that it is not a session leader and can never acquire a terminal.
    status = 1
    try:
        os.close(rfd)
        os.setsid()
        if os.fork() == 0:
            status = _daemon_main(config, paths, wfd, workers)
        else:
            status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)             # never return into the caller's stack


def _await_daemon(rfd: int, paths: RunPaths, workers: int = 1) -> int:
    """Wait for the daemon's report on ``rfd``; print the outcome."""
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                raise CLIError(f"not listening after {START_TIMEOUT:g} s; see {paths.log_file}")
            chunk = os.read(rfd, 512)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(rfd)
    report = data.decode("utf-8", "replace").strip()
    if report == "ok":
        pid = read_pid(paths.pid_file)
        what = f"pid {pid}, {workers} workers" if workers > 1 else f"pid {pid}"
        print(f"{PROG} started ({what}); logging to {paths.log_file}")
        return 0
    if report.startswith("error "):
        raise CLIError(report[len("error "):])
    raise CLIError(f"the server exited while starting; see {paths.log_file}")


class _Reporter:
    """The daemon's end of the pipe: one report, then closed."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def ok(self) -> None:
        self._send("ok")

    def error(self, reason: str) -> None:
        self._send(f"error {one_line(reason)}")

    def _send(self, line: str) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.write(fd, f"{line}\n".encode())
        except OSError:
            pass                        # the operator's command is gone: nobody to tell
        finally:
            os.close(fd)

    @property
    def sent(self) -> bool:
        return self.fd is None


def _daemon_main(config: Config, paths: RunPaths, wfd: int, workers: int = 1) -> int:
    """The daemon itself: detach stdio, take the pid file, serve."""
    report = _Reporter(wfd)
    try:
        _detach_stdio(paths.log_file)
        setup_logging(config.log, paths.log_file)
        acquire_pid_file(paths.pid_file)
    except CLIError as exc:
        report.error(str(exc))
        return 1
    except OSError as exc:
        report.error(f"cannot start: {exc}")
        return 1
    status = 1
    try:
        _record_workers(paths, workers)
        status = _serve(config, report.ok, workers)
    except USER_ERRORS as exc:
        log.error("%s", exc)
        report.error(str(exc))
    except OSError as exc:                  # most often: the port is taken
        log.error("cannot start: %s", exc)
        report.error(str(exc))
    except BaseException as exc:
        log.exception("the server failed")
        report.error(f"the server failed: {exc!r}; see {paths.log_file}")
    finally:
        _forget_workers(paths.workers_file)
        release_pid_file(paths.pid_file)
        report.error(f"the server exited with status {status} before listening; "
                     f"see {paths.log_file}")   # a no-op once "ok" was sent
        logging.shutdown()
    return status


def _detach_stdio(log_file: Path) -> None:
    """stdin and stdout to /dev/null, stderr appended to the log (tracebacks land there)."""
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    os.close(null)
    os.close(err)


def setup_logging(level: str, log_file: Path | None) -> None:
    """Root logging at ``level`` to stderr, or appended to ``log_file``."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


# ---- workers

@dataclass
class _Worker:
    """One worker slot: the process filling it now, and its history."""

    index: int
    config: Config
    pid: int = 0                        # 0: no process (not started yet, or dead)
    report: int | None = None           # read end of its startup pipe
    data: bytes = b""
    state: str = "starting"             # starting | listening | failed
    error: str = ""                     # why it failed to start
    how: str = ""                       # how its last process ended
    restarts: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    restart_at: float | None = None     # time.monotonic() of its next start


class Workers:
    """``start --workers N``: N forked server processes, each a cluster node
    (``NODE-w0`` ...) listening on the same ports with SO_REUSEPORT.

    This process runs no event loop (forking one is undefined): it forks the
    workers, forwards SIGTERM/SIGINT to them, waits on them with ``select``
    (signals arrive through :func:`signal.set_wakeup_fd`), and replaces a
    worker that dies unexpectedly, after :data:`WORKER_RESTART_DELAY`, at most
    :data:`WORKER_RESTARTS` times per :data:`WORKER_RESTART_WINDOW` each.

    Each worker reports through a pipe, as the daemon does: ``ok`` once it
    listens, else one error line (which it also prints on stderr). ``ready``
    is called once every first worker has reported and one of them listens;
    if none does, :meth:`run` raises :class:`CLIError` with the first reason.
    After a requested stop it returns 0 once every worker has exited; it
    returns 1 if every worker died and none may be restarted.
    """

    def __init__(self, config: Config, count: int, ready: Callable[[], None] | None) -> None:
        assert config.cluster is not None and count > 1
        self.ready = ready
        self.workers = [
            _Worker(i, dataclasses.replace(
                config,
                client=dataclasses.replace(config.client, reuse_port=True),
                cluster=dataclasses.replace(config.cluster, node=f"{config.cluster.node}-w{i}")))
            for i in range(count)]
        self.started = False            # every first worker has reported, one listens
        self.stop_signal: int | None = None     # a SIGTERM/SIGINT to forward
        self.stopping = False
        self.kill_at: float | None = None
        self.failure: str | None = None         # no worker started: why
        self._wake_r = self._wake_w = -1

    # -- the supervising process

    def run(self) -> int:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, self._on_signal)
                        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        try:
            for w in self.workers:
                self._spawn(w)
            return self._loop()
        finally:
            if any(w.pid for w in self.workers):    # only after a bug: leave no orphans
                self._terminate(signal.SIGTERM)
                self._wait_all(time.monotonic() + WORKER_KILL_AFTER)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_wakeup)
            for fd in (self._wake_r, self._wake_w, *(w.report for w in self.workers)):
                if fd is not None and fd >= 0:
                    os.close(fd)
            for w in self.workers:
                w.report = None

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.stop_signal = signum   # the loop forwards it; SIGCHLD only wakes it

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            if self.stop_signal is not None:
                sig, self.stop_signal = self.stop_signal, None
                if not self.stopping:
                    log.info("stopping %d workers (%s)", self._alive(), signal.Signals(sig).name)
                    self._begin_stop(now)
                self._terminate(sig)
            self._reap(now)
            if self.stopping:
                if not self._alive():
                    if self.failure is not None:
                        raise CLIError(self.failure)
                    log.info("every worker has exited")
                    return 0
                if self.kill_at is not None and now >= self.kill_at:
                    log.warning("%d workers still running %g s after the stop: SIGKILL",
                                self._alive(), WORKER_KILL_AFTER)
                    self._terminate(signal.SIGKILL)
                    self.kill_at = None
            else:
                if not self.started:
                    self._check_started(now)
                for w in self.workers:
                    if w.restart_at is not None and now >= w.restart_at and not self.stopping:
                        w.restart_at = None
                        w.restarts.append(now)
                        self._spawn(w)
                if self.started and not self._alive() and \
                        all(w.restart_at is None for w in self.workers):
                    log.error("every worker has died and none may be restarted; exiting")
                    return 1
            self._wait(now)

    def _wait(self, now: float) -> None:
        """Sleep until a report, a signal or the next deadline."""
        deadlines = [w.restart_at for w in self.workers if w.restart_at is not None]
        if self.kill_at is not None:
            deadlines.append(self.kill_at)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        fds = [self._wake_r, *(w.report for w in self.workers if w.report is not None)]
        for fd in select.select(fds, [], [], timeout)[0]:
            if fd == self._wake_r:
                try:
                    while os.read(fd, 512):
                        pass
                except BlockingIOError:
                    pass
            else:
                self._read_report(next(w for w in self.workers if w.report == fd))

    def _begin_stop(self, now: float) -> None:
        self.stopping = True
        self.kill_at = now + WORKER_KILL_AFTER
        for w in self.workers:
            w.restart_at = None

    def _alive(self) -> int:
        return sum(1 for w in self.workers if w.pid)

    def _terminate(self, sig: int) -> None:
        for w in self.workers:
            if w.pid:
                try:
                    os.kill(w.pid, sig)
                except ProcessLookupError:
                    pass                # exited; _reap will see it

    def _wait_all(self, deadline: float) -> None:
        """Reap every worker, with SIGKILL after ``deadline`` (the cleanup path)."""
        while self._alive():
            self._reap(time.monotonic())
            if time.monotonic() > deadline:
                self._terminate(signal.SIGKILL)
            time.sleep(0.05)

    def _spawn(self, w: _Worker) -> None:
        rfd, wfd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(rfd)
                self._in_child()
                status = _worker_main(w.index, w.config, wfd)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)    # never return into the supervisor's stack
        os.close(wfd)
        os.set_blocking(rfd, False)
        w.pid, w.report, w.data, w.state, w.error = pid, rfd, b"", "starting", ""
        assert w.config.cluster is not None
        log.info("worker %d started (pid %d, node %s)", w.index, pid, w.config.cluster.node)

    def _in_child(self) -> None:
        """Undo the supervisor's signal setup and close its descriptors."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self._wake_r, self._wake_w, *(w.report for w in self.workers)):
            if fd is not None and fd >= 0:
                os.close(fd)

    def _read_report(self, w: _Worker) -> None:
        """Take what ``w`` wrote on its pipe: ``ok`` or ``error REASON``."""
        assert w.report is not None
        try:
            while chunk := os.read(w.report, 512):
                w.data += chunk
        except BlockingIOError:
            return                      # more to come
        os.close(w.report)              # end of file: the report is complete
        w.report = None
        line = w.data.decode("utf-8", "replace").strip()
        if line == "ok":
            w.state = "listening"
            if self.started:
                log.info("worker %d (pid %d) is listening again", w.index, w.pid)
        elif line:
            w.state, w.error = "failed", line.removeprefix("error ")
        # else: it died without a word; _reap() says how

    def _reap(self, now: float) -> None:
        for w in self.workers:
            if not w.pid:
                continue
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, 1
            if pid == 0:
                continue
            if w.report is not None:
                self._read_report(w)    # its writer is gone: reads to the end
            w.pid = 0
            w.how = _describe_exit(status)
            if w.state == "starting":
                w.state, w.error = "failed", f"{w.how} before listening"
            if self.stopping:
                log.info("worker %d %s", w.index, w.how)
            elif self.started:
                self._died(w, w.how, now)
            # else: _check_started() deals with it

    def _died(self, w: _Worker, how: str, now: float) -> None:
        """A worker died unexpectedly: replace it unless it died too often."""
        while w.restarts and now - w.restarts[0] > WORKER_RESTART_WINDOW:
            w.restarts.popleft()
        if len(w.restarts) >= WORKER_RESTARTS:
            log.error("worker %d %s; it was restarted %d times within %g s: giving up on it",
                      w.index, how, len(w.restarts), WORKER_RESTART_WINDOW)
            return
        log.warning("worker %d %s; restarting it in %g s", w.index, how, WORKER_RESTART_DELAY)
        w.restart_at = now + WORKER_RESTART_DELAY

    def _check_started(self, now: float) -> None:
        """Once every first worker has reported: go on if one listens, else fail."""
        if any(w.state == "starting" for w in self.workers):
            return
        listening = [w for w in self.workers if w.state == "listening"]
        if not listening:
            # Raised once every worker has exited; the caller logs it.
            self.failure = f"no worker started: worker 0: {self.workers[0].error}"
            self._begin_stop(now)
            self._terminate(signal.SIGTERM)
            return
        self.started = True
        log.info("%d of %d workers listening", len(listening), len(self.workers))
        for w in self.workers:
            if not w.pid:
                self._died(w, w.how if w.state == "listening"
                           else f"failed to start ({w.error})", now)
        if self.ready is not None:
            self.ready()


def _worker_main(index: int, config: Config, wfd: int) -> int:
    """A worker process: serve ``config``; report to the supervisor through ``wfd``.

    A startup error is one line on stderr (the log, for a daemon) and on the pipe.
    """
    report = _Reporter(wfd)
    status = 1
    try:
        status = _serve(config, report.ok)
    except USER_ERRORS + (OSError,) as exc:
        reason = one_line(str(exc)) or type(exc).__name__
        if isinstance(exc, OSError):        # most often: the port is taken
            reason = f"cannot start: {reason}"
        print(f"{PROG}: worker {index}: {reason}", file=sys.stderr)
        report.error(reason)
    except KeyboardInterrupt:
        status = 130
    finally:
        report.error(f"exited with status {status} before listening")   # no-op after "ok"
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return status


def _describe_exit(status: int) -> str:
    """A ``waitpid`` status in words: "exited with status 1", "was killed by SIGKILL"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


# ---- pid file

def read_pid(pid_file: Path) -> int | None:
    """The pid ``pid_file`` names, or None (missing, unreadable, garbage)."""
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                     # exists, but belongs to someone else
    return _proc_state(pid) != "Z"


def _proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (Linux); None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _is_vinespy(pid: int) -> bool:
    """False only if /proc shows ``pid`` is some other program (a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True                     # no /proc: trust the pid file
    return b"vinespy" in cmdline


def running_pid(pid_file: Path, *, clean: bool = False) -> int | None:
    """The pid of the server ``pid_file`` names if it runs; ``clean`` removes a stale file.

    After a crash and a reboot the recorded pid may belong to another program:
    on Linux such a pid (its command line never mentions vinespy) is stale,
    so that ``stop`` never signals a stranger.
    """
    pid = read_pid(pid_file)
    if pid is not None and process_alive(pid) and _is_vinespy(pid):
        return pid
    if clean:
        _remove_if_names(pid_file, pid)
    return None


def acquire_pid_file(pid_file: Path) -> None:
    """Record this process in ``pid_file``, atomically and exclusively.

    The pid is written to a private temporary file and hard-linked into
    place: a reader never sees a partial file, and of two servers starting
    at once only one link succeeds.
    """
    pid = os.getpid()
    tmp = pid_file.with_name(f".{pid_file.name}.{pid}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{pid}\n")
        for _ in range(2):
            try:
                os.link(tmp, pid_file)
                return
            except FileExistsError:
                other = running_pid(pid_file, clean=True)
                if other is not None:
                    raise CLIError(f"already running (pid {other})") from None
        raise CLIError(f"{pid_file} keeps reappearing; is another vinespy starting?")
    finally:
        tmp.unlink(missing_ok=True)


def release_pid_file(pid_file: Path, pid: int | None = None) -> None:
    """Remove ``pid_file`` if it names ``pid`` (default: this process), else leave it."""
    _remove_if_names(pid_file, os.getpid() if pid is None else pid)


def _remove_if_names(pid_file: Path, pid: int | None) -> None:
    """Remove ``pid_file`` if it still reads as ``pid`` (None: unreadable content)."""
    if pid_file.exists() and read_pid(pid_file) == pid:
        pid_file.unlink(missing_ok=True)
