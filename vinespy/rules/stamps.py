"""XEP-0082 (XMPP Date and Time Profiles): the DateTime profile, as aware
UTC datetimes, for the timestamps of XEP-0203 delays and XEP-0313 queries.

Accepted: ``CCYY-MM-DDThh:mm:ss[.sss]TZD`` (§3.2), the fraction of any
length (past microseconds it is dropped), the time zone mandatory: ``Z`` or
``+hh:mm``/``-hh:mm`` (a caller may take a missing one as UTC). Written: UTC
with ``Z``, the fraction only when there is one, as §3.2's examples.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# The DateTime profile (XEP-0082 §3.2): CCYY-MM-DDThh:mm:ss[.sss]TZD, the time
# zone mandatory, either Z or +hh:mm/-hh:mm; any number of fraction digits.
_DATETIME = re.compile(r"(?P<date>\d{4}-\d\d-\d\d)T(?P<time>\d\d:\d\d:\d\d)"
                       r"(?:\.(?P<frac>\d+))?"
                       r"(?:(?P<z>Z)|(?P<sign>[+-])(?P<oh>\d\d):(?P<om>\d\d))?", re.ASCII)


def parse_datetime(text: str, *, assume_utc: bool = False) -> datetime:
    """An XEP-0082 DateTime as an aware UTC datetime (fractions past the
    microsecond dropped); ValueError for anything else, a missing time zone
    included unless ``assume_utc`` (being liberal with a client that sends
    a naive time, as slixmpp does for a naive datetime; Prosody reads those
    as UTC too)."""
    m = _DATETIME.fullmatch(text.strip())
    if m is None or not (m["z"] or m["sign"] or assume_utc):
        raise ValueError(f"{text!r} is not an XEP-0082 DateTime (CCYY-MM-DDThh:mm:ss[.sss]TZD,"
                         " the time zone mandatory)")
    tz = timezone.utc
    if m["sign"]:
        if int(m["oh"]) > 23 or int(m["om"]) > 59:
            raise ValueError(f"{text!r}: time zone offset out of range")
        offset = timedelta(hours=int(m["oh"]), minutes=int(m["om"]))
        tz = timezone(-offset if m["sign"] == "-" else offset)
    when = datetime.strptime(f"{m['date']}T{m['time']}", "%Y-%m-%dT%H:%M:%S")
    micro = int((m["frac"] or "0")[:6].ljust(6, "0"))
    return when.replace(microsecond=micro, tzinfo=tz).astimezone(timezone.utc)


def format_datetime(when: datetime) -> str:
    """``when`` as an XEP-0082 DateTime in UTC with ``Z``, the fraction only
    when there is one; ValueError for a naive datetime (whose zone is a guess)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a naive datetime has no time zone to format")
    when = when.astimezone(timezone.utc)
    spec = "%Y-%m-%dT%H:%M:%S.%fZ" if when.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return when.strftime(spec)
