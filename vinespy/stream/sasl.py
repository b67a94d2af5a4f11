"""SASL mechanisms for client authentication (RFC 6120 §6, RFC 4422).

* SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 7677, RFC 5802) run on ``scramp`` from
  the keys RFC 5802 §3 lets a server keep (salt, StoredKey, ServerKey,
  iteration count), so this path never sees a password.
* PLAIN (RFC 4616) is offered only on a TLS-protected stream (RFC 6120
  §6.3.4 and §13.8); the password is checked by recomputing StoredKey from the
  stored salt and iteration count, never by comparing clear text. On a host
  whose passwords live elsewhere (``[host.auth] backend = "ldap"``) an
  injected :data:`PasswordCheck` decides instead, and PLAIN is all there is.

No ``-PLUS`` mechanism is offered, so a client-first GS2 flag ``y`` is
accepted and ``p=`` is refused (RFC 5802 §6).

Mechanisms are pure state machines without sockets: the stream base64-decodes
``<auth/>`` and ``<response/>`` payloads, feeds them in, and turns each
:data:`Result` into ``<challenge/>``, ``<success/>`` or ``<failure/>``
(RFC 6120 §6.4). The credential lookup is injected. Client input never
raises: every bad input is a :class:`Failure` with an RFC 6120 §6.5
condition, and a storage failure is ``temporary-auth-failure``.

An unknown user is not revealed before the end of a SCRAM exchange: the server
answers client-first with a fake salt derived from the user name with a
per-process secret, and the exchange fails at client-final exactly like a
wrong password (``not-authorized``). PLAIN does a dummy key derivation for an
unknown user so both cases cost the same.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, ClassVar

from scramp import ScramException, ScramMechanism

from ..jid import JID, JIDError, prep_domain
from ..storage import ScramKeys, StorageError, User

log = logging.getLogger(__name__)

DEFAULT_ITERATIONS = 10000
# RFC 5802 §5.1 and RFC 7677 §4: at least 4096 iterations. scramp enforces it
# when it derives keys and when it serves an exchange, so credentials with
# fewer iterations could never be used.
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 10_000_000   # scramp's denial-of-service guard
SALT_BYTES = 16

_SCRAM_NAMES = ("SCRAM-SHA-256", "SCRAM-SHA-1")   # strongest first


@dataclass(frozen=True)
class Challenge:
    """Send ``<challenge/>`` with ``data`` (may be empty) and wait for a response."""

    data: bytes


@dataclass(frozen=True)
class Success:
    """Authenticated as the bare ``jid``; ``data`` is additional-data (SCRAM server-final)."""

    jid: JID
    data: bytes | None = None


@dataclass(frozen=True)
class Failure:
    """Send ``<failure/>`` with this RFC 6120 §6.5 ``condition`` and optional ``text``."""

    condition: str
    text: str | None = None


Result = Challenge | Success | Failure
Lookup = Callable[[JID], Awaitable[User | None]]
# Whether a password is the one of a bare JID, asked of someone who keeps the
# passwords (an LDAP directory); StorageError when it cannot answer now.
PasswordCheck = Callable[[JID, str], Awaitable[bool]]


def offered(secure: bool, scram: bool = True) -> list[str]:
    """Mechanism names to advertise, best first; PLAIN only when ``secure``
    (TLS); SCRAM only when ``scram`` (the server keeps the users' keys)."""
    names = list(_SCRAM_NAMES) if scram else []
    if secure:
        names.append(Plain.name)
    return names


def new(name: str, domain: str, lookup: Lookup, check: PasswordCheck | None = None
        ) -> Mechanism:
    """A fresh mechanism ``name`` for ``domain``; KeyError for an unknown name.

    With ``check``, PLAIN asks it instead of the stored keys, and there is no
    other mechanism (KeyError).
    """
    if check is not None:
        if name != Plain.name:
            raise KeyError(name)
        return Plain(domain, lookup, check)
    return _MECHANISMS[name](domain, lookup)


class Mechanism(abc.ABC):
    """One authentication exchange for users of one domain."""

    name: ClassVar[str]

    def __init__(self, domain: str, lookup: Lookup) -> None:
        self.domain = prep_domain(domain)
        self.lookup = lookup
        # The account the client tried, once known (None if not a valid
        # JID of this domain): what login throttling counts failures of.
        self.account: JID | None = None

    @abc.abstractmethod
    async def start(self, initial: bytes | None) -> Result:
        """Handle ``<auth/>``: ``initial`` is its decoded initial response, or None."""

    @abc.abstractmethod
    async def step(self, data: bytes) -> Result:
        """Handle a ``<response/>``, decoded."""

    def _authcid_jid(self, authcid: str) -> JID | None:
        """The bare JID an authentication identity names on this domain, or None.

        Accepts a localpart (RFC 6120 §6.3.8) or ``local@domain``; prepares it
        per RFC 7622. None when it is not a valid localpart or names another
        domain: to the caller that is simply an unknown user.
        """
        text = authcid if "@" in authcid else f"{authcid}@{self.domain}"
        try:
            jid = JID.parse(text)
        except JIDError:
            return None
        if not jid.local or jid.resource or jid.domain != self.domain:
            return None
        return jid

    async def _find(self, jid: JID | None) -> User | None:
        """``lookup(jid)``; None for None. StorageError propagates."""
        if jid is None:
            return None
        return await self.lookup(jid)


def _authzid_ok(authzid: str | None, jid: JID) -> bool:
    """True when no authzid was given or it names exactly the bare ``jid``."""
    if authzid is None:
        return True
    try:
        return JID.parse(authzid) == jid
    except JIDError:
        return False


# --- PLAIN -------------------------------------------------------------------


class Plain(Mechanism):
    """RFC 4616: ``[authzid] NUL authcid NUL passwd`` in a single message."""

    name = "PLAIN"

    def __init__(self, domain: str, lookup: Lookup, check: PasswordCheck | None = None) -> None:
        super().__init__(domain, lookup)
        self._password_check = check
        self._started = False
        self._done = False

    async def start(self, initial: bytes | None) -> Result:
        if self._started:
            return self._stop(Failure("malformed-request", "exchange already started"))
        self._started = True
        if initial is None:
            return Challenge(b"")       # RFC 6120 §6.4.2: ask for the response
        return await self._check(initial)

    async def step(self, data: bytes) -> Result:
        if not self._started:
            return self._stop(Failure("malformed-request", "no <auth/> yet"))
        return await self._check(data)

    def _stop(self, result: Result) -> Result:
        self._done = True
        return result

    async def _check(self, message: bytes) -> Result:
        if self._done:
            return Failure("malformed-request", "exchange already finished")
        self._done = True
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            return Failure("malformed-request", "PLAIN message is not UTF-8")
        parts = text.split("\0")
        if len(parts) != 3:
            return Failure("malformed-request", "PLAIN message needs exactly two NUL separators")
        authzid, authcid, password = parts
        if not authcid or not password:
            return Failure("malformed-request", "empty authcid or password")
        jid = self.account = self._authcid_jid(authcid)
        if self._password_check is not None:
            return await self._checked(jid, authzid, password)
        try:
            user = await self._find(jid)
        except StorageError:
            log.warning("PLAIN: user lookup failed for %s", jid, exc_info=True)
            return Failure("temporary-auth-failure", "account storage unavailable")
        # An unknown user costs one key derivation too (dummy keys).
        ok = await asyncio.to_thread(
            verify_password, user.credentials if user is not None else {}, password)
        if user is None or not ok:
            return Failure("not-authorized")
        bare = user.jid.bare
        if not _authzid_ok(authzid or None, bare):
            return Failure("invalid-authzid", "authzid differs from the authenticated JID")
        return Success(bare)

    async def _checked(self, jid: JID | None, authzid: str, password: str) -> Result:
        """The outcome when the password check is someone else's (LDAP)."""
        assert self._password_check is not None
        if jid is None:
            return Failure("not-authorized")
        try:
            ok = await self._password_check(jid.bare, password)
        except StorageError as exc:
            log.warning("PLAIN: cannot check the password of %s: %s", jid, exc)
            return Failure("temporary-auth-failure", "the account directory is unavailable")
        if not ok:
            return Failure("not-authorized")
        if not _authzid_ok(authzid or None, jid.bare):
            return Failure("invalid-authzid", "authzid differs from the authenticated JID")
        return Success(jid.bare)


# --- SCRAM -------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: a syntax error in a SCRAM message; ``str()`` is the failure text."""


def _unescape_saslname(value: str) -> str:
    """RFC 5802 §5.1 saslname: ``=2C`` -> ``,``, ``=3D`` -> ``=``; any other ``=`` is bad."""
    i = value.find("=")
    while i != -1:
        if value[i + 1:i + 3] not in ("2C", "3D"):
            raise _Malformed("bad '=' escape in a saslname")
        i = value.find("=", i + 3)
    return value.replace("=2C", ",").replace("=3D", "=")


@dataclass(frozen=True)
class _ClientFirst:
    flag: str              # "n" or "y"
    header: str            # the GS2 header as sent, e.g. "n,a=juliet@example.com,"
    authzid: str | None
    username: str          # unescaped, not yet prepared
    bare: str              # client-first-message-bare


def _parse_client_first(text: str) -> _ClientFirst:
    """Split client-first-message (RFC 5802 §7); scramp validates the rest."""
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise _Malformed("client-first-message has no GS2 header")
    flag, authzid_field, bare = parts
    if flag.startswith("p="):
        raise _Malformed("channel binding is not supported here (no -PLUS mechanism offered)")
    if flag not in ("n", "y"):
        raise _Malformed("bad GS2 channel-binding flag")
    authzid = None
    if authzid_field:
        if not authzid_field.startswith("a=") or len(authzid_field) == 2:
            raise _Malformed("bad GS2 authzid")
        authzid = _unescape_saslname(authzid_field[2:])
    first = bare.split(",", 1)[0]
    if first.startswith("m="):
        raise _Malformed("mandatory SCRAM extensions are not supported")
    if not first.startswith("n=") or len(first) == 2:
        raise _Malformed("client-first-message has no username")
    return _ClientFirst(flag, f"{flag},{authzid_field},", authzid,
                        _unescape_saslname(first[2:]), bare)


class _RawGs2Header:
    """Stands in for scramp's parsed GS2 header so that an authzid can be used.

    scramp refuses a GS2 header with an authzid, so client-first is handed to
    it without one, and this object then replaces the server's header: the
    channel-binding check of client-final (RFC 5802 §7: ``c=`` is the base64
    GS2 header for flags ``n`` and ``y``) must see the header the client
    really sent. Should a future scramp stop consulting ``gs2_header``, the
    check fails closed (not-authorized) and the authzid tests say so.
    """

    def __init__(self, header: str) -> None:
        self._header = header.encode("utf-8")

    def make_cbind_input(self, cb: object) -> bytes:
        return self._header


_FAKE_SECRET = secrets.token_bytes(32)
_NOT_AUTHORIZED_ERRORS = frozenset(("invalid-proof", "channel-bindings-dont-match"))


def _scramp_text(exc: ScramException) -> str:
    """scramp's message without its appended server-error code, bounded."""
    return str(exc.args[0] if exc.args else "SCRAM error")[:200]


class _Scram(Mechanism):
    """RFC 5802 server side, one round trip: client-first, client-final."""

    _digest: ClassVar[str]

    def __init__(self, domain: str, lookup: Lookup, s_nonce: str | None = None) -> None:
        """``s_nonce`` fixes the server nonce part (tests); scramp draws one otherwise."""
        super().__init__(domain, lookup)
        self._s_nonce = s_nonce
        self._state = "start"           # start -> first -> final -> done
        self._server: Any = None
        self._jid: JID | None = None    # None while the user is unknown
        self._authzid: str | None = None

    async def start(self, initial: bytes | None) -> Result:
        if self._state != "start":
            return self._fail("malformed-request", "exchange already started")
        self._state = "first"
        if initial is None:
            return Challenge(b"")       # RFC 6120 §6.4.2: ask for client-first
        return await self._client_first(initial)

    async def step(self, data: bytes) -> Result:
        if self._state == "first":
            return await self._client_first(data)
        if self._state == "final":
            return self._client_final(data)
        return self._fail("malformed-request", "unexpected response")

    def _fail(self, condition: str, text: str | None = None) -> Failure:
        self._state = "done"
        self._server = None
        return Failure(condition, text)

    def _fake_keys(self, username: str) -> ScramKeys:
        """Keys for a user that does not exist: stable per user name, never usable."""
        seed = hmac.new(_FAKE_SECRET, f"{self.name}\0{self.domain}\0{username}".encode(),
                        hashlib.sha256).digest()
        return ScramKeys(salt=seed[:SALT_BYTES],
                         stored_key=hmac.new(seed, b"StoredKey", self._digest).digest(),
                         server_key=hmac.new(seed, b"ServerKey", self._digest).digest(),
                         iterations=DEFAULT_ITERATIONS)

    async def _client_first(self, data: bytes) -> Result:
        self._state = "done"
        try:
            text = data.decode("utf-8")
            first = _parse_client_first(text)
        except UnicodeDecodeError:
            return self._fail("malformed-request", "client-first-message is not UTF-8")
        except _Malformed as exc:
            return self._fail("malformed-request", str(exc))
        jid = self.account = self._authcid_jid(first.username)
        try:
            user = await self._find(jid)
        except StorageError:
            log.warning("%s: user lookup failed for %s", self.name, jid, exc_info=True)
            return self._fail("temporary-auth-failure", "account storage unavailable")
        keys = user.credentials.get(self.name) if user is not None else None
        if user is None or keys is None:
            keys = self._fake_keys(str(jid) if jid is not None else first.username)
        elif not (MIN_ITERATIONS <= keys.iterations <= MAX_ITERATIONS and len(keys.salt) >= 12):
            log.error("stored %s keys of %s are unusable", self.name, user.jid)
            return self._fail("temporary-auth-failure", "stored credentials are unusable")
        else:
            self._jid = user.jid.bare
        record = (keys.salt, keys.stored_key, keys.server_key, keys.iterations)

        def auth_fn(_username: str) -> tuple[bytes, bytes, bytes, int]:
            return record

        try:
            server = ScramMechanism(self.name).make_server(auth_fn, s_nonce=self._s_nonce)
            # scramp refuses any authzid: give it the header without one.
            server.set_client_first(f"{first.flag},,{first.bare}")
            server_first: str = server.get_server_first()
        except ScramException as exc:
            return self._fail("malformed-request", _scramp_text(exc))
        except Exception:               # defensive: a parser bug must not kill the stream
            log.warning("%s: scramp failed on client-first", self.name, exc_info=True)
            return self._fail("malformed-request", "bad client-first-message")
        if first.authzid is not None:
            server.gs2_header = _RawGs2Header(first.header)
        self._authzid = first.authzid
        self._server = server
        self._state = "final"
        return Challenge(server_first.encode("utf-8"))

    def _client_final(self, data: bytes) -> Result:
        server, jid = self._server, self._jid
        self._state = "done"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail("malformed-request", "client-final-message is not UTF-8")
        try:
            server.set_client_final(text)
            server_final: str = server.get_server_final()
        except ScramException as exc:
            error = getattr(getattr(exc, "server_error", None), "value", None)
            if error in _NOT_AUTHORIZED_ERRORS:
                return self._fail("not-authorized")
            return self._fail("malformed-request", _scramp_text(exc))
        except Exception:               # defensive, as above
            log.warning("%s: scramp failed on client-final", self.name, exc_info=True)
            return self._fail("malformed-request", "bad client-final-message")
        if jid is None:                 # fake keys cannot verify; belt and braces
            return self._fail("not-authorized")
        if not _authzid_ok(self._authzid, jid):
            return self._fail("invalid-authzid", "authzid differs from the authenticated JID")
        self._server = None
        return Success(jid, server_final.encode("utf-8"))


class ScramSha1(_Scram):
    """SCRAM-SHA-1 (RFC 5802)."""

    name = "SCRAM-SHA-1"
    _digest = "sha1"


class ScramSha256(_Scram):
    """SCRAM-SHA-256 (RFC 7677)."""

    name = "SCRAM-SHA-256"
    _digest = "sha256"


_MECHANISMS: dict[str, type[Mechanism]] = {
    cls.name: cls for cls in (ScramSha256, ScramSha1, Plain)
}


# --- credentials -------------------------------------------------------------


def make_credentials(password: str, iterations: int = DEFAULT_ITERATIONS) -> dict[str, ScramKeys]:
    """SCRAM-SHA-1 and SCRAM-SHA-256 keys for ``password`` with fresh random salts.

    The password is normalized with SASLprep (RFC 5802 §2.2, RFC 4013) as the
    SCRAM clients do. ValueError for an empty or unpreparable password or
    fewer than :data:`MIN_ITERATIONS` iterations.
    """
    if not password:
        raise ValueError("the password is empty")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}")
    credentials: dict[str, ScramKeys] = {}
    for name in _SCRAM_NAMES:
        try:
            salt, stored_key, server_key, i = ScramMechanism(name).make_auth_info(
                password, iteration_count=iterations, salt=os.urandom(SALT_BYTES))
        except ScramException as exc:
            raise ValueError(f"unusable password: {_scramp_text(exc)}") from None
        credentials[name] = ScramKeys(salt, stored_key, server_key, i)
    return credentials


_DUMMY = ScramKeys(os.urandom(SALT_BYTES), os.urandom(32), os.urandom(32), DEFAULT_ITERATIONS)


def verify_password(credentials: dict[str, ScramKeys], password: str) -> bool:
    """Whether ``password`` matches: recompute StoredKey from the stored salt.

    Prefers the SCRAM-SHA-256 keys. The comparison is constant-time; without
    any keys a dummy derivation of the default cost runs and False is returned.
    CPU-bound (one PBKDF2): call it through ``asyncio.to_thread``.
    """
    name, real = next(((n, True) for n in _SCRAM_NAMES if n in credentials),
                      ("SCRAM-SHA-256", False))
    keys = credentials[name] if real else _DUMMY
    try:
        _, stored_key, _, _ = ScramMechanism(name).make_auth_info(
            password, iteration_count=keys.iterations, salt=keys.salt)
    except ScramException:
        return False
    return hmac.compare_digest(stored_key, keys.stored_key) and real
