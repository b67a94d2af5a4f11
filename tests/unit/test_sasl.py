"""SASL mechanisms: SCRAM-SHA-1/256 (RFC 5802, RFC 7677) and PLAIN (RFC 4616)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from dataclasses import astuple

import pytest
from scramp import ScramClient, ScramMechanism

from vinespy.jid import JID
from vinespy.storage import ScramKeys, StorageError, User
from vinespy.stream import sasl
from vinespy.stream.sasl import Challenge, Failure, Success

DOMAIN = "example.com"
USER = JID.parse("user@example.com")
FAST = 4096          # the RFC minimum; the default (10000) is used once in test_accounts


def keys_from(mech: str, password: str, salt: bytes, iterations: int = 4096) -> ScramKeys:
    salt, stored_key, server_key, i = ScramMechanism(mech).make_auth_info(
        password, iteration_count=iterations, salt=salt)
    return ScramKeys(salt, stored_key, server_key, i)


class Directory:
    """An injected lookup over a dict; counts calls and can be made to fail."""

    def __init__(self, *users: User) -> None:
        self.users = {u.jid: u for u in users}
        self.calls: list[JID] = []
        self.broken = False

    async def __call__(self, jid: JID) -> User | None:
        self.calls.append(jid)
        if self.broken:
            raise StorageError("disk on fire")
        return self.users.get(jid)


@pytest.fixture(scope="module")
def credentials() -> dict[str, ScramKeys]:
    return sasl.make_credentials("pencil", FAST)


@pytest.fixture
def directory(credentials: dict[str, ScramKeys]) -> Directory:
    return Directory(User(USER, credentials),
                     User(JID.parse("a,b=c@example.com"), credentials))


class ManualClient:
    """A hand-written RFC 5802 client, for what scramp's client cannot send (y, a=)."""

    def __init__(self, digest: str, password: str, gs2_header: str, username: str,
                 c_nonce: str = "clientnonce") -> None:
        self.digest, self.password, self.header = digest, password, gs2_header
        self.bare = f"n={username},r={c_nonce}"

    def first(self) -> bytes:
        return (self.header + self.bare).encode()

    def final(self, server_first: bytes, cbind: str | None = None) -> bytes:
        attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
        salted = hashlib.pbkdf2_hmac(self.digest, self.password.encode(),
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", self.digest).digest()
        stored_key = hashlib.new(self.digest, client_key).digest()
        c = cbind if cbind is not None else base64.b64encode(self.header.encode()).decode()
        without_proof = f"c={c},r={attrs['r']}"
        auth = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored_key, auth, self.digest).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self.digest).digest()
        self.server_signature = hmac.new(server_key, auth, self.digest).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


async def scramp_exchange(mech: sasl.Mechanism, username: str, password: str
                          ) -> tuple[sasl.Result, ScramClient]:
    client = ScramClient([mech.name], username, password)
    first = await mech.start(client.get_client_first().encode())
    assert isinstance(first, Challenge), first
    client.set_server_first(first.data.decode())
    return await mech.step(client.get_client_final().encode()), client


# --- the RFC examples ----------------------------------------------------------


async def test_rfc5802_example_sha1() -> None:
    """The RFC 5802 §5 SCRAM-SHA-1 exchange, byte for byte."""
    salt = base64.b64decode("QSXCR+Q6sek8bf92")
    lookup = Directory(User(USER, {"SCRAM-SHA-1": keys_from("SCRAM-SHA-1", "pencil", salt)}))
    mech = sasl.ScramSha1(DOMAIN, lookup, s_nonce="3rfcNHYJY1ZVvWVs7j")
    first = await mech.start(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
    assert first == Challenge(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                              b"s=QSXCR+Q6sek8bf92,i=4096")
    final = await mech.step(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                            b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert final == Success(USER, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    assert lookup.calls == [USER]


async def test_rfc7677_example_sha256() -> None:
    """The RFC 7677 §3 SCRAM-SHA-256 exchange, byte for byte."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    lookup = Directory(User(USER, {"SCRAM-SHA-256": keys_from("SCRAM-SHA-256", "pencil", salt)}))
    mech = sasl.ScramSha256(DOMAIN, lookup, s_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    first = await mech.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == Challenge(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                              b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final = await mech.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                            b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert final == Success(USER, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


# --- SCRAM with real clients --------------------------------------------------

SCRAMS = ["SCRAM-SHA-1", "SCRAM-SHA-256"]


@pytest.mark.parametrize("name", SCRAMS)
async def test_scramp_client_succeeds(name: str, directory: Directory) -> None:
    """A scramp client with the right password authenticates and verifies the server."""
    result, client = await scramp_exchange(sasl.new(name, DOMAIN, directory), "user", "pencil")
    assert isinstance(result, Success) and result.jid == USER and result.data
    client.set_server_final(result.data.decode())     # raises if v= is wrong


@pytest.mark.parametrize("name", SCRAMS)
async def test_scram_without_initial_response(name: str, directory: Directory) -> None:
    """No initial response: an empty challenge first, then the normal exchange."""
    mech = sasl.new(name, DOMAIN, directory)
    assert await mech.start(None) == Challenge(b"")
    client = ScramClient([name], "user", "pencil")
    first = await mech.step(client.get_client_first().encode())
    assert isinstance(first, Challenge)
    client.set_server_first(first.data.decode())
    assert isinstance(await mech.step(client.get_client_final().encode()), Success)


@pytest.mark.parametrize("username", ["USER", "user@example.com", "User@EXAMPLE.com"])
async def test_scram_username_is_prepared(username: str, directory: Directory) -> None:
    """The SCRAM user name is a localpart or bare JID, prepared per RFC 7622."""
    result, _ = await scramp_exchange(sasl.new("SCRAM-SHA-256", DOMAIN, directory),
                                      username, "pencil")
    assert isinstance(result, Success) and result.jid == USER
    assert directory.calls == [USER]


async def test_scram_username_escapes(directory: Directory) -> None:
    """``=2C`` and ``=3D`` in the user name are unescaped before the lookup."""
    result, _ = await scramp_exchange(sasl.new("SCRAM-SHA-1", DOMAIN, directory),
                                      "a,b=c", "pencil")
    assert isinstance(result, Success) and result.jid == JID.parse("a,b=c@example.com")


@pytest.mark.parametrize("name", SCRAMS)
async def test_scram_wrong_password(name: str, directory: Directory) -> None:
    """A wrong password fails at client-final with not-authorized."""
    result, _ = await scramp_exchange(sasl.new(name, DOMAIN, directory), "user", "pencil2")
    assert result == Failure("not-authorized")


@pytest.mark.parametrize("username", ["nobody", "nobody@example.com", "user@other.example",
                                      "bad\u00a0name", "x/y"])
async def test_scram_unknown_user_fails_only_at_end(username: str, directory: Directory) -> None:
    """An unknown or foreign user gets a normal challenge and fails only at client-final."""
    mech = sasl.new("SCRAM-SHA-256", DOMAIN, directory)
    client = ManualClient("sha256", "pencil", "n,,", username.replace("=", "=3D"))
    first = await mech.start(client.first())
    assert isinstance(first, Challenge)
    assert b",s=" in first.data and first.data.endswith(b",i=10000")
    assert await mech.step(client.final(first.data)) == Failure("not-authorized")


async def test_scram_fake_salt_is_stable(directory: Directory) -> None:
    """The fake salt is the same on every attempt for a name and differs between names."""
    async def salt(name: str, username: str) -> bytes:
        first = await sasl.new(name, DOMAIN, directory).start(f"n,,n={username},r=abc".encode())
        assert isinstance(first, Challenge)
        return first.data.split(b",")[1]

    assert await salt("SCRAM-SHA-1", "ghost") == await salt("SCRAM-SHA-1", "ghost")
    assert await salt("SCRAM-SHA-1", "GHOST") == await salt("SCRAM-SHA-1", "ghost")
    assert await salt("SCRAM-SHA-1", "ghost") != await salt("SCRAM-SHA-1", "ghoul")
    assert await salt("SCRAM-SHA-1", "ghost") != await salt("SCRAM-SHA-256", "ghost")


async def test_scram_user_without_keys_for_mechanism() -> None:
    """A user with only SCRAM-SHA-256 keys looks unknown to SCRAM-SHA-1."""
    keys = sasl.make_credentials("pencil", FAST)
    lookup = Directory(User(USER, {"SCRAM-SHA-256": keys["SCRAM-SHA-256"]}))
    result, _ = await scramp_exchange(sasl.new("SCRAM-SHA-1", DOMAIN, lookup), "user", "pencil")
    assert result == Failure("not-authorized")


async def test_scram_unusable_stored_keys() -> None:
    """Stored keys scramp refuses (too few iterations) are a temporary failure, not a crash."""
    keys = sasl.make_credentials("pencil", FAST)["SCRAM-SHA-1"]
    weak = ScramKeys(keys.salt, keys.stored_key, keys.server_key, 1000)
    mech = sasl.new("SCRAM-SHA-1", DOMAIN, Directory(User(USER, {"SCRAM-SHA-1": weak})))
    result = await mech.start(b"n,,n=user,r=abc")
    assert isinstance(result, Failure) and result.condition == "temporary-auth-failure"


@pytest.mark.parametrize("name", SCRAMS)
async def test_scram_storage_error(name: str, directory: Directory) -> None:
    """A failing lookup is temporary-auth-failure."""
    directory.broken = True
    result = await sasl.new(name, DOMAIN, directory).start(b"n,,n=user,r=abc")
    assert isinstance(result, Failure) and result.condition == "temporary-auth-failure"


# --- GS2 header: y, p=, authzid ----------------------------------------------


async def test_scram_gs2_flag_y_accepted(directory: Directory) -> None:
    """Flag ``y`` (client supports channel binding, thinks we do not) is fine: no -PLUS here."""
    mech = sasl.new("SCRAM-SHA-1", DOMAIN, directory)
    client = ManualClient("sha1", "pencil", "y,,", "user")
    first = await mech.start(client.first())
    assert isinstance(first, Challenge)
    result = await mech.step(client.final(first.data))
    assert result == Success(USER, b"v=" + base64.b64encode(client.server_signature))


async def test_scram_channel_binding_refused(directory: Directory) -> None:
    """Flag ``p=`` asks for channel binding, which is not offered: malformed-request."""
    mech = sasl.new("SCRAM-SHA-256", DOMAIN, directory)
    result = await mech.start(b"p=tls-exporter,,n=user,r=abc")
    assert isinstance(result, Failure) and result.condition == "malformed-request"
    assert result.text and "channel binding" in result.text
    assert directory.calls == []


@pytest.mark.parametrize("authzid", ["user@example.com", "USER@example.com"])
@pytest.mark.parametrize("name", SCRAMS)
async def test_scram_authzid_same_as_user(name: str, authzid: str, directory: Directory) -> None:
    """An authzid naming the authenticated bare JID is accepted."""
    digest = name.removeprefix("SCRAM-").replace("-", "").lower()
    mech = sasl.new(name, DOMAIN, directory)
    client = ManualClient(digest, "pencil", f"n,a={authzid},", "user")
    first = await mech.start(client.first())
    assert isinstance(first, Challenge)
    result = await mech.step(client.final(first.data))
    assert result == Success(USER, b"v=" + base64.b64encode(client.server_signature))


@pytest.mark.parametrize("authzid", ["juliet@example.com", "user@example.com/res",
                                     "example.com", "@@"])
async def test_scram_authzid_mismatch(authzid: str, directory: Directory) -> None:
    """An authzid naming anyone else is invalid-authzid, after a valid proof."""
    mech = sasl.new("SCRAM-SHA-256", DOMAIN, directory)
    client = ManualClient("sha256", "pencil", f"n,a={authzid},", "user")
    first = await mech.start(client.first())
    assert isinstance(first, Challenge)
    result = await mech.step(client.final(first.data))
    assert isinstance(result, Failure) and result.condition == "invalid-authzid"


async def test_scram_authzid_cbind_must_match(directory: Directory) -> None:
    """With an authzid, c= must carry that same GS2 header."""
    mech = sasl.new("SCRAM-SHA-256", DOMAIN, directory)
    client = ManualClient("sha256", "pencil", "n,a=user@example.com,", "user")
    first = await mech.start(client.first())
    assert isinstance(first, Challenge)
    assert await mech.step(client.final(first.data, cbind="biws")) == Failure("not-authorized")


# --- malformed input: always a Failure ------------------------------------------


@pytest.mark.parametrize("message", [
    b"",
    b"\xff\xfe\xfd",
    b"garbage",
    b"n,,",
    b"n,",
    b"n,,r=abc",
    b"n,,n=user",
    b"n,,n=user,r=",
    b"n,,n=,r=abc",
    b"n,,n=us=er,r=abc",
    b"n,,n=user,r=ab c",
    b"n,,n=user,r=abc,x",
    b"n,,n=user,n=user,r=abc",
    b"n,,m=ext,n=user,r=abc",
    b"x,,n=user,r=abc",
    b"N,,n=user,r=abc",
    b"n,b=user,n=user,r=abc",
    b"n,a=,n=user,r=abc",
    b"n,a=us=er,n=user,r=abc",
    b"n,,n=user,r=a\x00c",
    b"n,,n=\xc3\xa9\xcc,r=abc",
])
@pytest.mark.parametrize("name", SCRAMS)
async def test_scram_malformed_client_first(name: str, message: bytes,
                                            directory: Directory) -> None:
    """Every malformed client-first-message is malformed-request, never an exception."""
    result = await sasl.new(name, DOMAIN, directory).start(message)
    assert isinstance(result, Failure) and result.condition == "malformed-request", result


GOOD_FIRST = b"n,,n=user,r=cnonce"


@pytest.mark.parametrize("final, condition", [
    (b"", "malformed-request"),
    (b"\xff", "malformed-request"),
    (b"garbage", "malformed-request"),
    (b"c=biws,r=cnonceSNONCE", "malformed-request"),                  # no proof
    (b"r=cnonceSNONCE,p=AAAA", "malformed-request"),                  # no c=
    (b"c=biws,p=AAAA", "malformed-request"),                          # no r=
    (b"c=biws,r=cnonceWRONG,p=AAAA", "malformed-request"),            # wrong nonce
    (b"c=biws,r=cnonce,p=AAAA", "malformed-request"),                 # client nonce only
    (b"c=biws,r=cnonceSNONCE,p=!!!!", "malformed-request"),           # bad base64
    (b"c=!!!!,r=cnonceSNONCE,p=AAAA", "malformed-request"),
    (b"c=biws,r=cnonceSNONCE,p=AAAA", "not-authorized"),              # short proof
    (b"c=eSws,r=cnonceSNONCE,p=" + base64.b64encode(bytes(32)), "not-authorized"),  # y,, vs n,,
    (b"c=biws,r=cnonceSNONCE,p=" + base64.b64encode(bytes(32)), "not-authorized"),  # bad proof
    (b"c=biws,r=cnonceSNONCE,x=1,p=" + base64.b64encode(bytes(32)), "not-authorized"),
    (b"c=biws,r=cnonceSNONCE,p=AAAA,q=1", "malformed-request"),
])
async def test_scram_malformed_client_final(final: bytes, condition: str,
                                            directory: Directory) -> None:
    """Every bad client-final-message is a Failure with the mapped condition."""
    mech = sasl.ScramSha256(DOMAIN, directory, s_nonce="SNONCE")
    assert isinstance(await mech.start(GOOD_FIRST), Challenge)
    result = await mech.step(final)
    assert isinstance(result, Failure) and result.condition == condition, result


@pytest.mark.parametrize("name", SCRAMS)
async def test_scram_random_bytes_never_raise(name: str, directory: Directory) -> None:
    """Random bytes in either message produce a Challenge or Failure, never an exception."""
    rng = random.Random(5802)
    alphabet = b"nyp=,aArcsiv\x00\xff=2C3D" + bytes(range(32, 127))
    for _ in range(300):
        junk = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        mech = sasl.new(name, DOMAIN, directory)
        assert isinstance(await mech.start(junk), (Challenge, Failure))
        mech = sasl.new(name, DOMAIN, directory)
        assert isinstance(await mech.start(GOOD_FIRST), Challenge)
        assert isinstance(await mech.step(junk), Failure)


@pytest.mark.parametrize("name", [*SCRAMS, "PLAIN"])
async def test_out_of_order_calls_fail(name: str, directory: Directory) -> None:
    """start() twice, or step() after the end, is a Failure and never a Success."""
    mech = sasl.new(name, DOMAIN, directory)
    await mech.start(None)
    again = await mech.start(None)
    assert isinstance(again, Failure)
    assert isinstance(await mech.step(b"\0user\0pencil"), Failure)
    assert isinstance(await mech.step(b"anything"), Failure)


async def test_scram_step_after_success_fails(directory: Directory) -> None:
    """Once a SCRAM exchange succeeded, a further response is a Failure."""
    mech = sasl.new("SCRAM-SHA-256", DOMAIN, directory)
    result, client = await scramp_exchange(mech, "user", "pencil")
    assert isinstance(result, Success)
    assert isinstance(await mech.step(b"c=biws"), Failure)


# --- PLAIN -----------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    b"\0user\0pencil",
    b"\0USER\0pencil",
    b"\0user@example.com\0pencil",
    b"user@example.com\0user\0pencil",
    b"User@Example.COM\0user\0pencil",
])
async def test_plain_success(message: bytes, directory: Directory) -> None:
    """Right password, localpart or bare-JID authcid, optional matching authzid."""
    assert await sasl.new("PLAIN", DOMAIN, directory).start(message) == Success(USER)


async def test_plain_without_initial_response(directory: Directory) -> None:
    """No initial response: an empty challenge, then the message as a response."""
    mech = sasl.new("PLAIN", DOMAIN, directory)
    assert await mech.start(None) == Challenge(b"")
    assert await mech.step(b"\0user\0pencil") == Success(USER)


@pytest.mark.parametrize("message", [
    b"\0user\0wrong",
    b"\0user\0Pencil",
    b"\0nobody\0pencil",
    b"\0user@other.example\0pencil",
    b"\0us/er\0pencil",
    b"\0\xc2\xa0\0pencil",
])
async def test_plain_not_authorized(message: bytes, directory: Directory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrong password, unknown or foreign user: not-authorized after one key derivation."""
    calls = []
    real = sasl.verify_password

    def spy(credentials: dict[str, ScramKeys], password: str) -> bool:
        calls.append(credentials)
        return real(credentials, password)

    monkeypatch.setattr(sasl, "verify_password", spy)
    assert await sasl.new("PLAIN", DOMAIN, directory).start(message) == Failure("not-authorized")
    assert len(calls) == 1


@pytest.mark.parametrize("message", [
    b"", b"user", b"user\0pencil", b"\0\0pencil", b"\0user\0", b"\0\0",
    b"a\0user\0pencil\0", b"\0user\0pen\0cil", b"\0user\0\xff", b"\xff\0user\0pencil",
])
async def test_plain_malformed(message: bytes, directory: Directory) -> None:
    """Missing or empty pieces and non-UTF-8 are malformed-request, with no lookup."""
    result = await sasl.new("PLAIN", DOMAIN, directory).start(message)
    assert isinstance(result, Failure) and result.condition == "malformed-request"
    assert directory.calls == []


@pytest.mark.parametrize("authzid", [b"juliet@example.com", b"user@example.com/r",
                                     b"example.com", b"@"])
async def test_plain_authzid_mismatch(authzid: bytes, directory: Directory) -> None:
    """An authzid other than the authenticated bare JID is invalid-authzid."""
    result = await sasl.new("PLAIN", DOMAIN, directory).start(authzid + b"\0user\0pencil")
    assert isinstance(result, Failure) and result.condition == "invalid-authzid"


async def test_plain_storage_error(directory: Directory) -> None:
    """A failing lookup is temporary-auth-failure."""
    directory.broken = True
    result = await sasl.new("PLAIN", DOMAIN, directory).start(b"\0user\0pencil")
    assert isinstance(result, Failure) and result.condition == "temporary-auth-failure"


# --- mechanism list and credentials -------------------------------------------------


def test_offered() -> None:
    """PLAIN is offered only on a secure stream; SCRAM-SHA-256 comes first."""
    assert sasl.offered(False) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert sasl.offered(True) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def test_new() -> None:
    """new() builds each offered mechanism and raises KeyError for others."""
    for name in sasl.offered(True):
        assert sasl.new(name, DOMAIN, Directory()).name == name
    with pytest.raises(KeyError):
        sasl.new("SCRAM-SHA-1-PLUS", DOMAIN, Directory())


def test_credentials_hold_no_password() -> None:
    """make_credentials keeps salts and derived keys only, fresh salts every time."""
    password = "correct horse battery staple"
    creds = sasl.make_credentials(password, FAST)
    again = sasl.make_credentials(password, FAST)
    assert set(creds) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    for name, keys in creds.items():
        assert keys.iterations == FAST and len(keys.salt) == 16
        assert len(keys.stored_key) == len(keys.server_key) == (20 if name == "SCRAM-SHA-1"
                                                                else 32)
        assert keys.salt != again[name].salt and keys.stored_key != again[name].stored_key
        for value in astuple(keys):
            assert password not in repr(value)
            if isinstance(value, bytes):
                assert password.encode() not in value
    assert creds["SCRAM-SHA-1"].salt != creds["SCRAM-SHA-256"].salt


@pytest.mark.parametrize("password, iterations", [("", FAST), ("pencil", 4095),
                                                  ("bad\u0007", FAST)])
def test_make_credentials_refuses(password: str, iterations: int) -> None:
    """Empty or unpreparable passwords and too few iterations are ValueError."""
    with pytest.raises(ValueError):
        sasl.make_credentials(password, iterations)


def test_verify_password(credentials: dict[str, ScramKeys]) -> None:
    """verify_password accepts the password, SASLprep-equivalent forms, nothing else."""
    assert sasl.verify_password(credentials, "pencil")
    assert sasl.verify_password(credentials, "pen\u00adcil")      # soft hyphen maps to nothing
    assert not sasl.verify_password(credentials, "pencil ")
    assert not sasl.verify_password(credentials, "bad\u0007")
    assert not sasl.verify_password({}, "pencil")


def test_verify_password_prefers_sha256(credentials: dict[str, ScramKeys]) -> None:
    """SCRAM-SHA-256 keys are checked when present; SCRAM-SHA-1 keys alone also work."""
    broken_sha1 = ScramKeys(b"x" * 16, b"x" * 20, b"x" * 20, FAST)
    assert sasl.verify_password({**credentials, "SCRAM-SHA-1": broken_sha1}, "pencil")
    assert sasl.verify_password({"SCRAM-SHA-1": credentials["SCRAM-SHA-1"]}, "pencil")
