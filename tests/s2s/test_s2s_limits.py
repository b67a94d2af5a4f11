"""What a peer may make vinespy do before it has proved anything, and how
failures are reported to it (review of the s2s code against RFC 6120,
XEP-0220, XEP-0178): raw peers over real TCP + TLS."""

from __future__ import annotations

import base64
from pathlib import Path

import trustme

from tests.s2s import rawpeer
from tests.s2s.conftest import peer
from tests.support import TIMEOUT, free_port
from vinespy import ns


async def test_a_stanza_before_any_authentication_is_not_authorized(
        tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 6120 §4.9.3.12: stanzas on a stream that authenticated nothing."""
    async with peer(tmp_path, ca, "wonderland.lit", free_port(), {}) as w:
        conn = await rawpeer.connect(w.server.ports["server"], ca, "evil.lit", "wonderland.lit")
        try:
            conn.send("<message from='m@evil.lit' to='alice@wonderland.lit'><body>x</body>"
                      "</message>")
            rest = await conn.until_closed()
            assert [rawpeer.stream_error(e) for e in rest] == ["not-authorized"]
        finally:
            conn.writer.close()


async def test_a_stream_that_authenticates_nothing_is_closed(
        tmp_path: Path, ca: trustme.CA) -> None:
    """Like a client that never logs in: after twice connect_timeout."""
    async with peer(tmp_path, ca, "wonderland.lit", free_port(), {},
                    connect_timeout=0.5) as w:
        conn = await rawpeer.connect(w.server.ports["server"], ca, "evil.lit", "wonderland.lit")
        try:
            rest = await conn.until_closed(timeout=TIMEOUT)
            assert [rawpeer.stream_error(e) for e in rest] == ["connection-timeout"]
        finally:
            conn.writer.close()


async def test_dialback_checks_per_stream_are_limited_and_errors_say_little(
        tmp_path: Path, ca: trustme.CA) -> None:
    """XEP-0220 §2.2.1: each db:result makes vinespy connect to the domain's
    server on the peer's say-so; one stream gets 8 at once, the 9th is
    answered at once with an error. And an authoritative server that cannot
    be reached is reported as remote-server-not-found (§2.4), whatever
    happened (the peer learns nothing of the connection it caused)."""
    silent = free_port()            # nothing listens: refused
    routes = {f"n{i}.evil.lit": silent for i in range(9)}
    async with peer(tmp_path, ca, "wonderland.lit", free_port(), routes,
                    connect_timeout=5.0) as w:
        conn = await rawpeer.connect(w.server.ports["server"], ca, "n0.evil.lit",
                                     "wonderland.lit")
        try:
            for i in range(9):
                conn.send(f"<db:result from='n{i}.evil.lit' to='wonderland.lit'>k{i}"
                          "</db:result>")
            answers = {}
            while len(answers) < 9:
                el = await conn.expect(rawpeer.DB_RESULT)
                condition = next((c.tag.split("}")[1] for e in el for c in e
                                  if c.tag.startswith(f"{{{ns.STANZAS}}}")), None)
                answers[el.get("to")] = (el.get("type"), condition)
                if len(answers) == 1:
                    first = el.get("to")
            assert first == "n8.evil.lit", "the 9th is refused before the others end"
            assert set(answers.values()) == {("error", "remote-server-not-found")}
        finally:
            conn.writer.close()


async def test_sasl_external_for_another_identity_is_refused(
        tmp_path: Path, ca: trustme.CA) -> None:
    """XEP-0178 §3, RFC 6120 §6.4.6: an authorization identity other than the
    domain the certificate proves: <invalid-authzid/>, and the stream ends."""
    async with peer(tmp_path, ca, "wonderland.lit", free_port(), {}) as w:
        conn = await rawpeer.connect(w.server.ports["server"], ca, "evil.lit", "wonderland.lit",
                                     client_cert="evil.lit")
        try:
            other = base64.b64encode(b"other.lit").decode()
            conn.send(f"<auth xmlns='{ns.SASL}' mechanism='EXTERNAL'>{other}</auth>")
            failure = await conn.expect(f"{{{ns.SASL}}}failure")
            assert [c.tag for c in failure] == [f"{{{ns.SASL}}}invalid-authzid"]
            await conn.until_closed()
        finally:
            conn.writer.close()
