"""Failed logins across connections: a ban per address, a delay per account.

No I/O and no clock of its own: every call takes ``now``. One
:class:`AuthThrottle` per server process (in a cluster each node keeps its
own: an attacker spread over N nodes gets N times the budget).

* **Per address** (Prosody's mod_limit_auth, ejabberd's mod_fail2ban): an
  address with ``ban_failures`` failed logins within ``ban_time`` seconds is
  refused (``<temporary-auth-failure/>``) until the oldest of them is
  ``ban_time`` old. Refused attempts are not checked, so they add nothing:
  an address gets at most ``ban_failures`` guesses per ``ban_time``. IPv6
  addresses count per /64, the block one subscriber usually holds.
* **Per account**, whatever the address: after ``FREE`` failures the answer
  to each further attempt (right or wrong) is delayed, 1 s, 2 s, 4 s... up to
  ``delay_max``, until ``ban_time`` passes without a failure or the account
  logs in. Nobody is refused for the account's sake, so an attacker can slow
  the real user down by at most ``delay_max`` a login, never lock him out.

Both tables are bounded (``max_keys`` entries each, least recently failed
forgotten first), so made-up accounts and addresses cannot exhaust memory.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from typing import Hashable, TypeVar

FREE = 3                    # failures of an account before its logins are slowed

K = TypeVar("K")
V = TypeVar("V")


def _put(table: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Add ``key`` as the newest entry; forget the oldest beyond ``limit``."""
    table[key] = value
    while len(table) > limit:
        table.popitem(last=False)


def address_key(address: str) -> str:
    """The unit an address is counted by: itself (IPv4), its /64 (IPv6)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthThrottle:
    def __init__(self, *, ban_failures: int, ban_time: float, delay_max: float,
                 max_keys: int = 100_000) -> None:
        self.ban_failures = ban_failures
        self.ban_time = ban_time
        self.delay_max = delay_max
        self.max_keys = max_keys
        self._addresses: OrderedDict[str, deque[float]] = OrderedDict()
        self._accounts: OrderedDict[Hashable, tuple[int, float]] = OrderedDict()

    def refused_for(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try a login again (0: now)."""
        times = self._addresses.get(address_key(address))
        if times is None or len(times) < self.ban_failures:
            return 0.0
        return max(0.0, times[0] + self.ban_time - now)

    def delay(self, account: Hashable | None, now: float) -> float:
        """Seconds to wait before answering a login attempt on ``account``."""
        count = self._account_failures(account, now)
        if count < FREE or not self.delay_max:
            return 0.0
        return float(min(self.delay_max, 2 ** min(count - FREE, 16)))

    def failed(self, address: str, account: Hashable | None, now: float) -> None:
        """A login from ``address`` for ``account`` failed (wrong credentials)."""
        key = address_key(address)
        times = self._addresses.pop(key, None)
        if times is None:
            times = deque(maxlen=self.ban_failures)
        times.append(now)
        _put(self._addresses, key, times, self.max_keys)
        if account is not None:
            count = self._account_failures(account, now)
            self._accounts.pop(account, None)
            _put(self._accounts, account, (count + 1, now), self.max_keys)

    def succeeded(self, account: Hashable) -> None:
        """``account`` logged in: its failures are forgotten (not the address's:
        one known password must not buy guesses at other accounts)."""
        self._accounts.pop(account, None)

    def _account_failures(self, account: Hashable | None, now: float) -> int:
        entry = self._accounts.get(account) if account is not None else None
        if entry is None or now - entry[1] > self.ban_time:
            return 0
        return entry[0]
