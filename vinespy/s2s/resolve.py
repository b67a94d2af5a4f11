"""Where a remote domain's XMPP server is (RFC 6120 §3.2, XEP-0368).

The static ``[server] routes`` first; then the SRV records
``_xmpps-server._tcp`` (TLS from the first byte) and ``_xmpp-server._tcp``
(STARTTLS), taken together and ordered by priority and weight (RFC 2782);
without any, the domain itself on port 5269 (§3.2.2). A single SRV record
whose target is ``.`` says the domain offers no such service (§3.2.1).
DNS is the system's, or the servers of ``[server] nameservers``, which then
also give the targets' addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

DEFAULT_PORT = 5269

log = logging.getLogger("vinespy.s2s")


class NotFound(Exception):
    """The domain has no XMPP server (or DNS cannot say where it is)."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    direct_tls: bool            # XEP-0368: TLS first, no STARTTLS


def order(records: Iterable[tuple[int, int, Target]], rng: random.Random | None = None
          ) -> list[Target]:
    """RFC 2782's order of ``(priority, weight, target)``: lowest priority
    first; within one priority, a weighted random draw, one after another."""
    rng = rng or random.Random()
    by_priority: dict[int, list[tuple[int, Target]]] = {}
    for priority, weight, target in records:
        by_priority.setdefault(priority, []).append((weight, target))
    out: list[Target] = []
    for priority in sorted(by_priority):
        group = sorted(by_priority[priority], key=lambda wt: wt[0])   # zeros first
        while group:
            total = sum(w for w, _ in group)
            pick = rng.uniform(0, total) if total else 0
            run = 0
            for i, (weight, target) in enumerate(group):
                run += weight
                if run >= pick:
                    out.append(target)
                    del group[i]
                    break
    return out


async def targets(domain: str, routes: Mapping[str, tuple[str, int]], lifetime: float,
                  nameservers: Sequence[tuple[str, int]] = ()) -> list[Target]:
    """Where to try to reach ``domain``'s server, in order; NotFound if nowhere.

    ``nameservers`` (``[server] nameservers``: (address, port) pairs) are
    asked instead of the system's; then the targets' addresses are looked up
    with them too (A and AAAA records), not by the system's resolver, which
    would not know the names only they serve (split-horizon DNS)."""
    if domain in routes:
        host, port = routes[domain]
        return [Target(host, port, False)]
    if domain == "invalid" or domain.endswith(".invalid"):
        # RFC 6761 §6.4: resolvers "SHOULD always return immediate negative
        # responses" for these, without asking DNS (which may hang).
        raise NotFound(f"{domain} is a special-use name that never resolves (RFC 6761)")
    resolver = _resolver(domain, nameservers)
    records: list[tuple[int, int, Target]] = []
    answered = False
    services = (("_xmpps-server._tcp.", True), ("_xmpp-server._tcp.", False))
    # Both asked at once (XEP-0368 §3: the records are merged).
    answers = await asyncio.gather(*(_lookup(resolver, service + domain, "SRV", lifetime)
                                     for service, _ in services), return_exceptions=True)
    failed: list[BaseException] = []
    for (service, direct), answer in zip(services, answers):
        if isinstance(answer, NotFound):
            # RFC 6120 §3.2.1: no answer or an error (SERVFAIL, a timeout):
            # fall back to the domain's own address, as when there is none.
            failed.append(answer)
            continue
        if isinstance(answer, BaseException):
            raise answer
        if answer is None:
            continue
        answered = True
        for rr in answer:
            host = rr.target.to_text(omit_final_dot=True)
            if host in ("", "."):
                continue                # §3.2.1: "decidedly not available"
            records.append((rr.priority, rr.weight, Target(host, rr.port, direct)))
    if answered and not records:
        raise NotFound(f"{domain} publishes no XMPP server (SRV target '.')")
    if failed and not records:
        log.info("s2s: %s: %s; trying its own address", domain, failed[0])
    # §3.2.2: no SRV at all: the domain's own address, port 5269; whether it
    # has one the connection attempt finds out.
    found = order(records) if records else [Target(domain, DEFAULT_PORT, False)]
    if not nameservers:
        return found
    out: list[Target] = []
    known: dict[str, list[str]] = {}        # a host may be the target of several records
    for target in found:
        if target.host not in known:
            known[target.host] = await _addresses(resolver, target.host, lifetime)
        out.extend(Target(address, target.port, target.direct_tls)
                   for address in known[target.host])
    if not out:
        raise NotFound(f"no address for {', '.join(dict.fromkeys(t.host for t in found))}")
    return out


def _resolver(domain: str, nameservers: Sequence[tuple[str, int]]) -> Any:
    import dns.asyncresolver
    import dns.exception
    import dns.nameserver
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        # dnspython >= 2.4: a port per server (its ``port`` is one for all).
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                for host, port in nameservers]
        return resolver
    try:
        return dns.asyncresolver.Resolver()
    except dns.exception.DNSException as exc:       # no /etc/resolv.conf...
        raise NotFound(f"no DNS to look {domain} up with: {exc}") from None


async def _lookup(resolver: Any, name: str, rdtype: str, lifetime: float) -> Any:
    """The answer, or None if the name or the record type does not exist;
    NotFound if DNS cannot say."""
    import dns.exception
    import dns.resolver
    try:
        return await resolver.resolve(name, rdtype, lifetime=lifetime)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as exc:
        raise NotFound(f"DNS lookup of {name} ({rdtype}) failed: {exc}") from None


async def _addresses(resolver: Any, host: str, lifetime: float) -> list[str]:
    """``host``'s IPv6 and IPv4 addresses (an address stays itself); none if
    it has none or DNS cannot say (the next target is tried, §3.2.1)."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    out: list[str] = []
    for rdtype in ("AAAA", "A"):
        try:
            answer = await _lookup(resolver, host, rdtype, lifetime)
        except NotFound as exc:
            log.info("s2s: %s", exc)
            continue
        out.extend(rr.address for rr in answer or ())
    return out
