"""Where a remote domain's XMPP server is (RFC 6120 §3.2, XEP-0368).

The static ``[server] routes`` first; then the SRV records
``_xmpps-server._tcp`` (TLS from the first byte) and ``_xmpp-server._tcp``
(STARTTLS), taken together and ordered by priority and weight (RFC 2782);
without any, the domain itself on port 5269 (§3.2.2). A single SRV record
whose target is ``.`` says the domain offers no such service (§3.2.1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

DEFAULT_PORT = 5269


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


async def targets(domain: str, routes: Mapping[str, tuple[str, int]],
                  lifetime: float) -> list[Target]:
    """Where to try to reach ``domain``'s server, in order; NotFound if nowhere."""
    if domain in routes:
        host, port = routes[domain]
        return [Target(host, port, False)]
    if domain == "invalid" or domain.endswith(".invalid"):
        # RFC 6761 §6.4: resolvers "SHOULD always return immediate negative
        # responses" for these, without asking DNS (which may hang).
        raise NotFound(f"{domain} is a special-use name that never resolves (RFC 6761)")
    import dns.asyncresolver
    import dns.exception
    import dns.resolver
    try:
        resolver = dns.asyncresolver.Resolver()
    except dns.exception.DNSException as exc:       # no /etc/resolv.conf...
        raise NotFound(f"no DNS to look {domain} up with: {exc}") from None
    records: list[tuple[int, int, Target]] = []
    answered = False
    for service, direct in (("_xmpps-server._tcp.", True), ("_xmpp-server._tcp.", False)):
        try:
            answer: Any = await resolver.resolve(service + domain, "SRV", lifetime=lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            raise NotFound(f"DNS lookup of {service}{domain} failed: {exc}") from None
        answered = True
        for rr in answer:
            host = rr.target.to_text(omit_final_dot=True)
            if host in ("", "."):
                continue                # §3.2.1: "decidedly not available"
            records.append((rr.priority, rr.weight, Target(host, rr.port, direct)))
    if answered and not records:
        raise NotFound(f"{domain} publishes no XMPP server (SRV target '.')")
    if records:
        return order(records)
    # §3.2.2: no SRV at all: the domain's own address, port 5269; whether it
    # has one the connection attempt finds out.
    return [Target(domain, DEFAULT_PORT, False)]
