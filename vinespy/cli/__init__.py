"""The ``vinespy`` command: init, start, stop, restart, status, cert, accounts, migrate.

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
forwards SIGTERM/SIGINT and replaces a worker that dies
(:class:`vinespy.process.workers.Workers`).

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

``db upgrade`` creates or upgrades the schema of the SQL databases the
config names (:mod:`.db`).

``migrate --to URL`` copies the configured storage (and pubsub nodes) into
another backend and verifies the copy; it refuses while the server runs.

One module per concern: :mod:`.init` (``init``, ``cert``), :mod:`.accounts`,
:mod:`.pubsub`, :mod:`.migrate`, :mod:`.db`, :mod:`.run` (``start``, ``stop``,
``restart``, ``status``); this one holds the parser. Pid files, the daemon and the worker supervisor
are :mod:`vinespy.process`'s: no argument parsing or printing there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .. import __version__
from ..process import OPERATOR_ERRORS
from ..process.pidfile import RunPaths
from ..process.report import one_line

PROG = "vinespy"
DEFAULT_CONFIG = "conf/config.toml"


class CLIError(Exception):
    """An operator error: printed as ``vinespy: <message>``, exit ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# Errors whose message is meant for the operator: one line, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (CLIError, *OPERATOR_ERRORS)


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
    except CLIError as exc:             # usage error, see Parser.error
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


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see '{self.prog} --help')", status=2)


def build_parser() -> argparse.ArgumentParser:
    """The parser for every command; each subparser sets ``handler``."""
    # The commands' modules import this package (CLIError): imported here, once it exists.
    from . import accounts, db, init, migrate, pubsub, run
    from ..tls import KEY_TYPES
    parser = Parser(prog=PROG, description="An XMPP server on asyncio, in the spirit of Vines.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    config_help = f"the configuration file (default: {DEFAULT_CONFIG})"
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="PATH",
                        help=config_help)
    # Also accepted after the command name (`vinespy start -c x.toml`); SUPPRESS
    # keeps the subparser from resetting a value given before it.
    common = Parser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="PATH",
                        help=config_help)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("init", help="make DOMAIN/ with a config, a certificate and two users",
                       description="Create ./DOMAIN/ holding conf/config.toml, a self-signed "
                       "certificate, data/, log/, pid/ and the example users alice and arthur.")
    p.add_argument("domain", metavar="DOMAIN")
    p.set_defaults(handler=init.cmd_init)

    p = sub.add_parser("start", parents=[common], help="run the server",
                       description="Run the server, in the foreground unless -d is given.")
    p.add_argument("-d", "--daemonize", action="store_true",
                   help="run in the background; return once it is listening")
    p.add_argument("--workers", type=run.worker_count, default=1, metavar="N",
                   help=f"run N (1-{run.MAX_WORKERS}) worker processes sharing the ports, each "
                   "a node of the [cluster] (default: 1, no supervisor)")
    p.set_defaults(handler=run.cmd_start)

    p = sub.add_parser("stop", parents=[common], help="stop the running server")
    p.set_defaults(handler=run.cmd_stop)

    p = sub.add_parser("restart", parents=[common], help="stop the server, then start -d")
    p.add_argument("--workers", type=run.worker_count, default=None, metavar="N",
                   help="as for start (default: as many as the running server has)")
    p.set_defaults(handler=run.cmd_restart)

    p = sub.add_parser("status", parents=[common],
                       help="exit 0 if the server runs, 3 if it does not")
    p.set_defaults(handler=run.cmd_status)

    p = sub.add_parser("cert", parents=[common], help="make a self-signed certificate",
                       description="Write DOMAIN.crt and DOMAIN.key into the config's certs "
                       "directory (./conf/certs without a config).")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("--force", action="store_true", help="replace an existing certificate")
    p.add_argument("--key-type", choices=KEY_TYPES, default=KEY_TYPES[0],
                   help="ecdsa (P-256, the default: half the server CPU per TLS handshake) "
                   "or rsa (2048 bits, for clients without ECDSA)")
    p.set_defaults(handler=init.cmd_cert)

    for name, handler, what in (("register", accounts.cmd_register, "create an account"),
                                ("passwd", accounts.cmd_passwd, "change an account's password"),
                                ("unregister", accounts.cmd_unregister, "delete an account")):
        p = sub.add_parser(name, parents=[common], help=what,
                           description=f"{what[0].upper()}{what[1:]}; works while the "
                           "server runs.")
        p.add_argument("jid", metavar="JID", help="user@domain, a domain this config serves")
        if name != "unregister":
            p.add_argument("--password-file", metavar="FILE",
                           help="read the password from the first line of FILE "
                           "('-' = standard input) instead of asking")
        p.set_defaults(handler=handler)

    pubsub.add_parser(sub, common)
    migrate.add_parser(sub, common)
    db.add_parser(sub, common)
    return parser


def existing_paths(args: argparse.Namespace) -> RunPaths:
    """The run paths, refusing a config path that names nothing (wrong directory)."""
    if not Path(args.config).is_file():
        raise CLIError(f"{args.config}: no such file (run this inside the directory "
                       f"made by '{PROG} init DOMAIN', or pass -c PATH)")
    return RunPaths.for_config(args.config)
