"""The negotiation features (STARTTLS, SASL, bind) on a stand-in stream:
what each offers when, and what it takes or refuses, without a socket."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vinespy.errors import StreamError
from vinespy.jid import JID
from vinespy.stream.negotiation import Auth, Bind, StartTLS

from tests.harness import parse


class Stream:
    """What a feature reads and asks of a ClientStream, recorded."""

    def __init__(self, *, secure: bool = False, tls: str = "required",
                 user: str | None = None) -> None:
        self.secure = secure
        self.user = JID.parse(user) if user else None
        self.cfg = SimpleNamespace(tls=tls, max_auth_failures=2)
        self.host: Any = None
        self.closing = False
        self.out: list[bytes] = []
        self.closed: list[StreamError | None] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self, error: StreamError | None = None) -> None:
        self.closing = True
        self.closed.append(error)


def offers(stream: Stream) -> list[str]:
    s: Any = stream
    return [f.offer(s) for f in (StartTLS(), Auth(), Bind())]


def test_in_clear_with_tls_required_only_starttls_is_offered() -> None:
    tls, auth, bind = offers(Stream())
    assert tls == "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    assert auth == bind == ""


def test_in_clear_with_tls_optional_sasl_is_offered_too() -> None:
    tls, auth, bind = offers(Stream(tls="optional"))
    assert tls == "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'></starttls>"
    assert auth.startswith("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>")
    assert bind == ""


def test_once_secure_sasl_then_once_authenticated_bind() -> None:
    tls, auth, _ = offers(Stream(secure=True))
    assert tls == "" and "<mechanism>SCRAM-SHA-256</mechanism>" in auth
    tls, auth, bind = offers(Stream(secure=True, user="alice@wonderland.lit"))
    assert tls == auth == ""
    assert bind.startswith("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session ")


async def test_starttls_required_refuses_anything_else() -> None:
    s: Any = Stream()
    with pytest.raises(StreamError) as exc:
        await StartTLS().handle(s, parse("<iq type='get' id='1'/>"))
    assert exc.value.condition == "policy-violation"
    assert await StartTLS().handle(Stream(tls="optional"), parse("<iq/>")) is None  # type: ignore


async def test_sasl_abort_and_failures() -> None:
    s: Any = Stream(secure=True)
    auth = Auth()
    abort = parse("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert await auth.handle(s, abort) is False
    assert s.out == [b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>"]
    # A response with no exchange under way, or another element: not SASL's.
    assert await auth.handle(s, parse(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</response>")) is None
    assert await auth.handle(s, parse("<iq/>")) is None
    # An unknown mechanism fails; max_auth_failures of them close the stream.
    bad = parse("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-NONE'/>")
    assert await auth.handle(s, bad) is False and not s.closed
    assert await auth.handle(s, bad) is False
    assert b"<invalid-mechanism/>" in s.out[-1]
    assert [e.condition for e in s.closed if e is not None] == ["policy-violation"]


async def test_bind_takes_only_a_bind_iq_once_authenticated() -> None:
    iq = parse("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert await Bind().handle(Stream(secure=True), iq) is None  # type: ignore[arg-type]
    other = parse("<iq type='get' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    s: Any = Stream(secure=True, user="alice@wonderland.lit")
    assert await Bind().handle(s, other) is None
