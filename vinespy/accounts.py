"""Account operations for the CLI and for password checks.

Credentials are SCRAM keys (RFC 5802 §3, RFC 7677) for both SCRAM-SHA-1 and
SCRAM-SHA-256, derived by :func:`vinespy.stream.sasl.make_credentials`; no
password is ever stored. Key derivation is CPU-bound PBKDF2, so it runs in a
worker thread and the event loop keeps serving. Storage failures propagate as
:class:`~vinespy.storage.StorageError`; everything the operator did wrong is
an :class:`AccountError` with a one-line message.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .jid import JID
from .storage import ScramKeys, Storage, User
from .stream.sasl import DEFAULT_ITERATIONS, make_credentials, verify_password

if TYPE_CHECKING:
    from .storage.archive import ArchiveStore


class AccountError(Exception):
    """The operation cannot be done; ``str()`` is one line for the CLI."""


def _user_jid(jid: JID) -> JID:
    if not jid.local or jid.resource:
        raise AccountError(f"{jid} is not a bare user JID (user@domain)")
    return jid


async def _credentials(password: str, iterations: int) -> dict[str, ScramKeys]:
    try:
        return await asyncio.to_thread(make_credentials, password, iterations)
    except ValueError as exc:
        raise AccountError(str(exc)) from None


async def create_user(storage: Storage, jid: JID, password: str,
                      iterations: int = DEFAULT_ITERATIONS) -> User:
    """Create the account ``jid`` with ``password``; AccountError if it exists
    (also when another process creates it in the same instant: add_user)."""
    jid = _user_jid(jid)
    if await storage.find_user(jid) is not None:
        raise AccountError(f"{jid} already exists")
    user = User(jid=jid, credentials=await _credentials(password, iterations))
    if not await storage.add_user(user):
        raise AccountError(f"{jid} already exists")
    return user


async def set_password(storage: Storage, jid: JID, password: str,
                       iterations: int = DEFAULT_ITERATIONS) -> None:
    """Replace the credentials of ``jid``, and nothing else (the server may be
    changing the roster meanwhile); AccountError if there is no such user."""
    jid = _user_jid(jid)
    if await storage.find_account(jid) is None:
        raise AccountError(f"no such user: {jid}")
    if not await storage.set_credentials(jid, await _credentials(password, iterations)):
        raise AccountError(f"no such user: {jid}")


async def delete_user(storage: Storage, jid: JID, archive: ArchiveStore | None = None) -> None:
    """Remove ``jid`` and everything stored for it, with its message archive
    (XEP-0313) from ``archive`` (its host's); AccountError if absent. The
    archive goes after the account (no message is archived for an account
    that does not exist), and also when the account is already gone (what
    an earlier failure left)."""
    jid = _user_jid(jid)
    deleted = await storage.delete_user(jid)
    if archive is not None:
        await archive.delete_owner(jid)
    if not deleted:
        raise AccountError(f"no such user: {jid}")


async def authenticate(storage: Storage, jid: JID, password: str) -> User | None:
    """The user if ``password`` is right, else None (also for an unknown user).

    An unknown user costs the same key derivation as a known one.
    """
    user = await storage.find_user(jid.bare) if jid.local else None
    credentials = user.credentials if user is not None else {}
    ok = await asyncio.to_thread(verify_password, credentials, password)
    return user if ok and user is not None else None
