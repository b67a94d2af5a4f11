"""``vinespy db upgrade``: create or upgrade the schema of every SQL database
the config names (``[host.storage] backend = "sql"``).

``vinespy start`` creates the schema in an empty database by itself, and
refuses one of an older version with a line naming this command: upgrading
is the operator's decision (back up first; stop every node of a cluster,
which all share the database), taken once, not by whichever node starts
first. See :mod:`vinespy.storage.sqlschema` for the versions.
"""

from __future__ import annotations

import argparse
import asyncio

from ..config import load
from ..storage import open_storage
from ..storage.sql import SqlStorage
from . import CLIError, Parser, existing_paths


def add_parser(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = sub.add_parser("db", help="the SQL database's schema",
                       description="Manage the schema of the SQL databases of the "
                       "[[host]] tables with backend = \"sql\".")
    p.set_defaults(handler=_no_action)
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    u = actions.add_parser("upgrade", parents=[common],
                           help="create the schema, or bring it to this vinespy's version",
                           description="Create the tables in an empty database, or run "
                           "every step from the database's schema version to this "
                           "vinespy's, in one transaction. Back up first, and stop "
                           "every node that uses the database.")
    u.set_defaults(handler=cmd_upgrade)


def _no_action(args: argparse.Namespace) -> int:
    raise CLIError("db: no action given: upgrade (see 'vinespy db --help')", status=2)


def cmd_upgrade(args: argparse.Namespace) -> int:
    existing_paths(args)
    config = load(args.config, check_certs=False)
    databases = {str(h.storage.options["url"]): h.storage.options
                 for h in config.hosts if h.storage.backend == "sql"}
    if not databases:
        print('no [[host]] has backend = "sql": nothing to upgrade')
        return 0
    for options in databases.values():
        storage = open_storage("sql", options)
        assert isinstance(storage, SqlStorage)
        found, now = asyncio.run(storage.upgrade())
        if found is None:
            print(f"{storage.shown}: schema created at version {now}")
        elif found == now:
            print(f"{storage.shown}: schema version {now} already; nothing to do")
        else:
            print(f"{storage.shown}: schema upgraded from version {found} to {now}")
    return 0
