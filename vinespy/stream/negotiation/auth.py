"""SASL (RFC 6120 §6): offered before authentication once TLS allows it;
the mechanisms are :mod:`vinespy.stream.sasl`'s, the login throttle
:mod:`vinespy.stream.throttle`'s."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
from typing import TYPE_CHECKING

from ... import ns
from ...errors import StreamError
from ...jid import JID
from ...xml import Element, escape_attr
from .. import sasl

if TYPE_CHECKING:
    from ..client import C2S

log = logging.getLogger("vinespy.c2s")

_SASL = f"{{{ns.SASL}}}"


def _address(stream: C2S) -> str:
    return str(stream.peer[0]) if isinstance(stream.peer, tuple) else ""


class Auth:
    def __init__(self) -> None:
        self._mechanism: sasl.Mechanism | None = None     # the exchange under way
        self._failures = 0

    @staticmethod
    def _applies(stream: C2S) -> bool:
        return stream.user is None and (stream.secure or stream.cfg.tls == "optional")

    @staticmethod
    def _offered(stream: C2S) -> list[str]:
        """SCRAM needs the keys the server keeps: none on a host whose
        directory keeps the passwords (LDAP), which gets PLAIN over TLS only."""
        directory = stream.host.directory if stream.host is not None else None
        return sasl.offered(stream.secure, scram=directory is None)

    def offer(self, stream: C2S) -> str:
        offered = self._offered(stream) if self._applies(stream) else []
        if not offered:     # e.g. LDAP before TLS: no SASL feature at all yet
            return ""
        mechs = "".join(f"<mechanism>{m}</mechanism>" for m in offered)
        return f"<mechanisms xmlns='{ns.SASL}'>{mechs}</mechanisms>"

    async def handle(self, stream: C2S, el: Element) -> bool | None:
        if not self._applies(stream) or not el.tag.startswith(_SASL):
            return None
        name = el.tag[len(_SASL):]
        if name == "auth":
            result = await self._start(stream, el)
        elif name == "response" and self._mechanism is not None:
            data = self._decode(stream, el)
            if data is False:
                return False
            result = await self._mechanism.step(data if data is not True else b"")
        elif name == "abort":
            self._failure(stream, "aborted", None)
            return False
        else:
            return None
        if result is None:
            return False
        if not isinstance(result, sasl.Challenge) and self._mechanism is not None:
            await self._throttle(stream, self._mechanism.account, result)
            if stream.closing:
                return True
        return self._result(stream, result)

    async def _start(self, stream: C2S, el: Element) -> sasl.Result | None:
        """``<auth/>``: the first step of a mechanism (None: failure sent)."""
        mech_name = el.get("mechanism", "")
        if mech_name not in self._offered(stream):
            self._failure(stream, "invalid-mechanism", None)
            return None
        wait = stream.server.auth_throttle.refused_for(_address(stream), stream.loop.time())
        if wait:
            self._failure(stream, "temporary-auth-failure", "too many failed logins from "
                          f"your address; try again in {math.ceil(wait)} s")
            return None
        host = stream.host
        assert host is not None
        check = host.directory.check if host.directory is not None else None
        self._mechanism = sasl.new(mech_name, host.domain, host.storage.find_account, check)
        data = self._decode(stream, el)
        if data is False:
            return None
        return await self._mechanism.start(data if data is not True else None)

    async def _throttle(self, stream: C2S, account: JID | None,
                        result: sasl.Result) -> None:
        """Before the outcome of a login on ``account`` is told: wait as long
        as its earlier failures ask; then count this one (stream/throttle.py)."""
        throttle = stream.server.auth_throttle
        delay = throttle.delay(account, stream.loop.time())
        if delay:
            await asyncio.sleep(delay)
        if isinstance(result, sasl.Failure) and result.condition == "not-authorized":
            throttle.failed(_address(stream), account, stream.loop.time())
        elif isinstance(result, sasl.Success):
            throttle.succeeded(result.jid)

    def _decode(self, stream: C2S, el: Element) -> bytes | bool:
        """The base64 payload; True when absent; False (failure sent) if bad."""
        text = (el.text or "").strip()
        if not text:
            return True
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._failure(stream, "incorrect-encoding", None)
            return False

    def _result(self, stream: C2S, result: sasl.Result) -> bool:
        if isinstance(result, sasl.Challenge):
            data = base64.b64encode(result.data).decode() if result.data else "="
            stream.write(f"<challenge xmlns='{ns.SASL}'>{data}</challenge>".encode())
            return False
        if isinstance(result, sasl.Failure):
            self._failure(stream, result.condition, result.text)
            return False
        stream.mechanism = self._mechanism.name if self._mechanism else None
        self._mechanism = None
        stream.user = result.jid
        if result.data:
            data = base64.b64encode(result.data).decode()
            stream.write(f"<success xmlns='{ns.SASL}'>{data}</success>".encode())
        else:
            stream.write(f"<success xmlns='{ns.SASL}'/>".encode())
        log.info("%s authenticated as %s", stream.peer, stream.user)
        stream.restart()
        return True

    def _failure(self, stream: C2S, condition: str, text: str | None) -> None:
        self._mechanism = None
        body = f"<{condition}/>"
        if text:
            body += f"<text xml:lang='en'>{escape_attr(text)}</text>"
        stream.write(f"<failure xmlns='{ns.SASL}'>{body}</failure>".encode())
        if condition == "aborted":
            return
        self._failures += 1
        if self._failures >= stream.cfg.max_auth_failures:
            stream.close(StreamError("policy-violation", "too many failed authentication attempts"))
