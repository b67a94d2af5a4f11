"""``vinespy register|passwd|unregister JID``: accounts, written to the host's storage.

They write the storage directly, so they also work while the server runs:
the fs backend replaces one file per account atomically. On a host whose
passwords are in LDAP, register and passwd refuse; unregister still deletes
what the server stored for the user (roster, offline messages...).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Awaitable, Callable, TypeVar

from ..accounts import create_user, delete_user, set_password
from ..config import HostConfig, load
from ..config.rules import safe_url
from ..jid import JID, JIDError
from ..storage import Storage, open_storage
from ..storage.archive import archive_for
from ..storage.pubsub import delete_service
from . import CLIError, existing_paths

T = TypeVar("T")


def cmd_register(args: argparse.Namespace) -> int:
    """``vinespy register JID``: create an account."""
    jid, host = _account_target(args)
    _passwords_here(host, jid, "register")
    password = read_password(args.password_file, jid)
    run_on_storage(host, lambda s: create_user(s, jid, password))
    print(f"Registered {jid}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """``vinespy passwd JID``: change an account's password."""
    jid, host = _account_target(args)
    _passwords_here(host, jid, "passwd")
    password = read_password(args.password_file, jid)
    run_on_storage(host, lambda s: set_password(s, jid, password))
    print(f"Changed the password of {jid}")
    return 0


def cmd_unregister(args: argparse.Namespace) -> int:
    """``vinespy unregister JID``: delete an account, its message archive
    and its XEP-0163 PEP nodes (in the pubsub store the server uses, where
    this process reaches it: fs, sql, or Redis with a [cluster])."""
    jid, host = _account_target(args)
    config = load(args.config, check_certs=False)

    async def unregister(storage: Storage) -> None:
        # The host's archive store as the server opens it (on sql: this storage).
        archive = archive_for(config, host, storage)
        await archive.open()
        try:
            await delete_user(storage, jid, archive)
        finally:
            await archive.close()
    run_on_storage(host, unregister)
    if config.cluster is not None or host.storage.backend in ("fs", "sql"):
        from .pubsub import PubSubTarget, run_on_pubsub
        run_on_pubsub(PubSubTarget(config, str(jid), host),
                      lambda store: delete_service(store, str(jid)))
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
    existing_paths(args)
    config = load(args.config, check_certs=False)
    host = config.host_for(jid.domain)
    if host is None:
        raise CLIError(f"{jid.domain} is not served here")
    return jid, host


def _passwords_here(host: HostConfig, jid: JID, command: str) -> None:
    """Refuse, before any prompt, to set a password the server does not keep."""
    if host.auth.backend == "ldap":
        raise CLIError(f"{jid.domain} checks passwords in LDAP ({safe_url(host.auth.url)}): "
                       f"accounts and passwords are made there, not with vinespy {command}")


def run_on_storage(host: HostConfig, call: Callable[[Storage], Awaitable[T]]) -> T:
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
