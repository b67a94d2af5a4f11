"""``[host.auth] backend = "ldap"``: passwords and account existence from an
LDAP directory (RFC 4511 simple bind, RFC 4515 search filters).

A login searches ``base`` for ``filter`` with ``{user}`` replaced by the
localpart (escaped per RFC 4515 §3, so ``*)(uid=*`` finds nobody), as
``bind_dn`` or anonymously; exactly one entry must match; then a simple bind
as that entry's DN with the password decides. The directory keeps the
passwords, so the server holds no keys: SCRAM cannot run and the stream
offers PLAIN only, and only over TLS (stream/negotiation/auth.py).

Every operation opens its own connection (ldap:// with optional StartTLS, or
ldaps://, trusting ``ca_file`` or the system store) in a small thread pool of
its own: ldap3 blocks, and a directory that hangs then holds those threads
only, never the event loop nor the threads of ``asyncio.to_thread``. No
connection outlives an operation, so when the directory comes back after an
outage the next login simply works. Unreachable or refusing the search
account: :class:`DirectoryUnavailable` (a StorageError: one line at start,
``<temporary-auth-failure/>`` at login).

Existence ("is there a user alice?", asked by presence probes, offline
storage, rosters through ``find_user``) is cached ``cache_ttl`` seconds, a
"no" at most :data:`NEGATIVE_TTL`. :class:`DirectoryStorage` answers
``find_user`` from it and creates the storage row (no credentials) of a
directory user the first time it is needed, so rosters and offline messages
are stored as for any account. A user removed from the directory no longer
exists for the server once the cache expires; the row stays (``vinespy
unregister`` removes it). The directory's users exist on every domain of
their ``[[host]]`` table: the filter sees the localpart only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import ssl
import time
from urllib.parse import urlsplit
from typing import Awaitable, Callable, TypeVar

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from ..config.hosts import AuthConfig
from ..config.rules import safe_url
from ..jid import JID
from ..storage import ContactLookup, Storage, StorageError, User, Wrapped

log = logging.getLogger("vinespy.auth.ldap")

T = TypeVar("T")

NEGATIVE_TTL = 10.0       # s a "no such user" is kept at most: new hires log in soon
CACHE_MAX = 10_000        # entries; the oldest go first (names probed at random, say)
WORKERS = 4               # threads talking to the directory at once
_INVALID_CREDENTIALS = 49  # RFC 4511 §4.1.9 resultCode
_NO_SUCH_OBJECT = 32       # the search base is missing: nobody is there


class DirectoryUnavailable(StorageError):
    """The directory cannot answer now (unreachable, timed out, the search
    account refused); ``str()`` is one line naming its URL, never a password."""


class LdapDirectory:
    """One ``[host.auth]`` directory: :meth:`check` passwords, :meth:`exists` users."""

    def __init__(self, cfg: AuthConfig) -> None:
        self.cfg = cfg
        self.name = safe_url(cfg.url)
        self._password = cfg.bind_password
        if cfg.bind_password_file is not None:
            try:
                self._password = cfg.bind_password_file.read_text("utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise StorageError(f"{cfg.bind_password_file}: cannot read the LDAP bind "
                                   f"password: {getattr(exc, 'strerror', None) or exc}") from None
        self._tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                              ca_certs_file=str(cfg.ca_file) if cfg.ca_file else None)
        self._known: dict[str, tuple[bool, float]] = {}     # localpart -> exists, until
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # --- the asyncio side ------------------------------------------------------

    async def open(self) -> None:
        """Connect and bind as the search account now: a directory that is
        away or refuses it stops the start with one line."""
        await self._call(self._probe)
        log.info("LDAP directory %s answers", self.name)
        host = urlsplit(self.cfg.url).hostname or ""
        if self.cfg.url.startswith("ldap://") and not self.cfg.starttls and not (
                host == "localhost" or host.startswith("127.") or host == "::1"):
            # The users' passwords, which clients send only over TLS, would
            # cross the network in clear to the directory.
            log.warning("LDAP directory %s: ldap:// without starttls = true sends the "
                        "users' passwords unencrypted; use ldaps:// or StartTLS", self.name)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, jid: JID, password: str) -> bool:
        """Whether ``password`` is the password of the directory user
        ``jid.local``; False for an unknown user; DirectoryUnavailable
        (a :data:`vinespy.stream.sasl.PasswordCheck`)."""
        local = jid.local
        if not local or not password:        # RFC 4513 §5.1.2: an empty password binds anonymously
            return False
        found = await self._call(lambda: self._check(local, password))
        if found is not None:
            self._remember(local, True)
        return bool(found)

    async def exists(self, local: str) -> bool:
        """Whether the directory has the user ``local`` (cached); DirectoryUnavailable."""
        hit = self._known.get(local)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        found = await self._call(lambda: self._exists(local))
        self._remember(local, found)
        return found

    def forget(self, local: str) -> None:
        self._known.pop(local, None)

    def _remember(self, local: str, found: bool) -> None:
        ttl = self.cfg.cache_ttl if found else min(self.cfg.cache_ttl, NEGATIVE_TTL)
        self._known.pop(local, None)
        if len(self._known) >= CACHE_MAX:
            del self._known[next(iter(self._known))]
        self._known[local] = (found, time.monotonic() + ttl)

    async def _call(self, work: Callable[[], T]) -> T:
        """``work()`` in the directory's threads; ldap3 and socket errors
        become DirectoryUnavailable."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, "vinespy-ldap")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)
        except (LDAPException, OSError) as exc:
            raise DirectoryUnavailable(f"LDAP {self.name}: {_reason(exc)}") from None

    # --- the thread side (blocking ldap3) --------------------------------------

    def _connect(self) -> ldap3.Connection:
        """A connection bound as the search account (TLS first if asked)."""
        cfg = self.cfg
        server = ldap3.Server(cfg.url, use_ssl=cfg.url.startswith("ldaps://"), tls=self._tls,
                              connect_timeout=cfg.timeout, get_info=ldap3.NONE)
        conn = ldap3.Connection(server, user=cfg.bind_dn or None,
                                password=self._password or None,
                                # whole seconds: it becomes SO_RCVTIMEO
                                receive_timeout=math.ceil(cfg.timeout), read_only=True)
        try:
            conn.open()
            if cfg.starttls and not conn.start_tls():
                raise DirectoryUnavailable(f"LDAP {self.name}: StartTLS refused: "
                                           f"{_result(conn)}")
            if not conn.bind():
                who = cfg.bind_dn or "anonymous"
                raise DirectoryUnavailable(f"LDAP {self.name}: the search bind as {who} "
                                           f"was refused: {_result(conn)}")
        except BaseException:
            conn.unbind()
            raise
        return conn

    def _find(self, conn: ldap3.Connection, local: str) -> str | None:
        """The DN of the one entry ``filter`` finds for ``local``, else None."""
        cfg = self.cfg
        query = cfg.filter.replace("{user}", escape_filter_chars(local))
        conn.search(cfg.base, query, attributes=[], size_limit=2,
                    time_limit=math.ceil(cfg.timeout))
        code = conn.result.get("result")
        if code == _NO_SUCH_OBJECT:
            return None
        dns = [e["dn"] for e in conn.response or () if e.get("type") == "searchResEntry"]
        if code not in (0, 4) and not dns:           # 4: sizeLimitExceeded (two found)
            raise DirectoryUnavailable(f"LDAP {self.name}: search failed: {_result(conn)}")
        if len(dns) > 1:
            log.warning("LDAP %s: %s matches several entries; nobody may log in as %r",
                        self.name, query, local)
            return None
        return dns[0] if dns else None

    def _probe(self) -> None:
        """Bind as the search account and search once: the base must exist
        and the filter parse, or nobody could ever log in."""
        conn = self._connect()
        try:
            conn.search(self.cfg.base, self.cfg.filter.replace("{user}", "vinespy-probe"),
                        attributes=[], size_limit=1, time_limit=math.ceil(self.cfg.timeout))
            if conn.result.get("result") not in (0, 4):
                raise DirectoryUnavailable(f"LDAP {self.name}: searching {self.cfg.base} "
                                           f"failed: {_result(conn)}")
        finally:
            conn.unbind()

    def _exists(self, local: str) -> bool:
        conn = self._connect()
        try:
            return self._find(conn, local) is not None
        finally:
            conn.unbind()

    def _check(self, local: str, password: str) -> bool | None:
        """True/False: the user's password is right/wrong; None: no such user."""
        conn = self._connect()
        try:
            dn = self._find(conn, local)
            if dn is None:
                return None
            if conn.rebind(dn, password):
                return True
            if conn.result.get("result") == _INVALID_CREDENTIALS:
                return False
            raise DirectoryUnavailable(f"LDAP {self.name}: bind as {dn} failed: "
                                       f"{_result(conn)}")
        finally:
            conn.unbind()


def _result(conn: ldap3.Connection) -> str:
    result = conn.result or {}
    text = result.get("description") or "no answer"
    return f"{text} ({result['message']})" if result.get("message") else str(text)


def _reason(exc: BaseException) -> str:
    """The first line of ``exc``, unwrapped: ldap3 nests the text of a
    socket error in tuple reprs, ``("('socket ssl wrapping error: ...',)",)``."""
    text = str(exc).strip("()\"',")
    return text.splitlines()[0] if text else type(exc).__name__


class DirectoryStorage(Wrapped):
    """``storage`` whose users are the directory's: ``find_user`` asks the
    directory (cached) and makes the row of a directory user on first need.

    While the directory is away, a user who has a row is still found (the
    server keeps working for known accounts); one who has none is a
    DirectoryUnavailable, not a "no such user", so nothing is bounced.
    """

    def __init__(self, storage: Storage, directory: LdapDirectory) -> None:
        super().__init__(storage)
        self.directory = directory

    async def _listed(self, jid: JID) -> bool | None:
        """Whether the directory has ``jid``'s user; None while it is away."""
        try:
            return await self.directory.exists(jid.local)
        except DirectoryUnavailable:
            return None

    async def find_user(self, jid: JID) -> User | None:
        return await self._find(jid, self.inner.find_user)

    async def find_account(self, jid: JID) -> User | None:
        return await self._find(jid, self.inner.find_account)

    async def _find(self, jid: JID, read: Callable[[JID], Awaitable[User | None]]
                    ) -> User | None:
        """``read(jid)`` for a user the directory has (its row made on first
        need); None for one it has not."""
        if not jid.local:
            return await read(jid)
        away: DirectoryUnavailable | None = None
        try:
            if not await self.directory.exists(jid.local):
                return None
        except DirectoryUnavailable as exc:
            away = exc
        user = await read(jid)
        if user is not None:
            return user
        if away is not None:
            raise away
        # add_user stores the empty row only if there is none (atomic on
        # sql), so a row another task or node made meanwhile, with the
        # roster it may have by now, is never overwritten.
        if await self.inner.add_user(User(jid.bare)):
            log.info("%s: first seen in LDAP %s", jid.bare, self.directory.name)
        return await read(jid)

    async def find_contact(self, jid: JID, contact: JID) -> ContactLookup | None:
        if jid.local and await self._listed(jid) is False:
            return None
        found = await self.inner.find_contact(jid, contact)
        if found is None and jid.local and await self.find_user(jid) is not None:
            found = await self.inner.find_contact(jid, contact)
        return found

    async def delete_user(self, jid: JID) -> bool:
        if jid.local:
            self.directory.forget(jid.local)
        return await self.inner.delete_user(jid)
