"""A tiny authoritative DNS server for the federation tests, on loopback UDP.

It answers from a zone the test gives (and may change while it runs)::

    {"_xmpp-server._tcp.verona.lit": {"SRV": ["0 5 5269 xmpp.verona.lit."]},
     "xmpp.verona.lit": {"A": ["127.0.0.1"]}}

a name absent from the zone is NXDOMAIN; a name without records of the
type asked is NOERROR with an empty answer (RFC 2308 NODATA). With
``silent`` it reads queries and never answers (a DNS server that is down
behind a firewall that drops packets). Every query is recorded, so that a
test can tell which names vinespy asked. Replies are small: no TCP (dnspython
asks over TCP only after a truncated UDP answer, which this never sends).

The wire format is dnspython's (``dns.message``): parsing and building DNS
messages is not this file's business.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = dict[str, dict[str, list[str]]]


class DNSServer(asyncio.DatagramProtocol):
    """Serves ``zone``; :attr:`queries` lists what was asked, as (name, type)."""

    def __init__(self, zone: Zone, *, silent: bool = False, ttl: int = 60) -> None:
        self.zone = zone
        self.silent = silent
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.address = ""

    async def __aenter__(self) -> DNSServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0))
        self.port = transport.get_extra_info("sockname")[1]
        self.address = f"127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def asked(self, name: str, rdtype: str = "SRV") -> int:
        """How many times ``name`` was asked for ``rdtype`` records."""
        return self.queries.count((name.rstrip(".").lower(), rdtype))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        for q in query.question:
            self.queries.append((q.name.to_text(omit_final_dot=True).lower(),
                                 dns.rdatatype.to_text(q.rdtype)))
        if self.silent or self.transport is None:
            return
        self.transport.sendto(self.answer(query).to_wire(), addr)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for q in query.question:
            records = self.zone.get(q.name.to_text(omit_final_dot=True).lower())
            if records is not None and records.get(dns.rdatatype.to_text(q.rdtype)) == \
                    ["SERVFAIL"]:
                response.set_rcode(dns.rcode.SERVFAIL)     # {"SRV": ["SERVFAIL"]}
                continue
            if records is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                continue
            texts = records.get(dns.rdatatype.to_text(q.rdtype), [])
            if texts:
                response.answer.append(dns.rrset.from_text_list(
                    q.name, self.ttl, dns.rdataclass.IN, q.rdtype, texts))
        return response
