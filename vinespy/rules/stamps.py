"""XEP-0082 (XMPP Date and Time Profiles): the DateTime profile, as aware
UTC datetimes, for the timestamps of XEP-0203 delays and XEP-0313 queries.

Accepted: ``CCYY-MM-DDThh:mm:ss[.sss]TZD`` (§3.2), the fraction of any
length (past microseconds it is dropped), the time zone mandatory: ``Z`` or
``+hh:mm``/``-hh:mm``. Written: UTC with ``Z``, the fraction only when there
is one, as §3.2's examples.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# The DateTime profile (XEP-0082 §3.2): CCYY-MM-DDThh:mm:ss[.sss]TZD, the time
# zone mandatory, either Z or +hh:mm/-hh:mm; any number of fraction digits.
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                       r"(?:(Z)|([+-])(\d\d):(\d\d))", re.ASCII)


def parse_datetime(text: str) -> datetime:
    """An XEP-0082 DateTime as an aware UTC datetime (fractions past the
    microsecond dropped); ValueError for anything else, a missing time zone
    included."""
    m = _DATETIME.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not an XEP-0082 DateTime (CCYY-MM-DDThh:mm:ss[.sss]TZD)")
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    if z:
        tz = timezone.utc
    else:
        if int(oh) > 23 or int(om) > 59:
            raise ValueError(f"{text!r}: time zone offset out of range")
        offset = timedelta(hours=int(oh), minutes=int(om))
        tz = timezone(-offset if sign == "-" else offset)
    when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                    micro, tzinfo=tz)
    return when.astimezone(timezone.utc)


def format_datetime(when: datetime) -> str:
    """``when`` as an XEP-0082 DateTime in UTC with ``Z``, the fraction only
    when there is one; ValueError for a naive datetime (whose zone is a guess)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a naive datetime has no time zone to format")
    when = when.astimezone(timezone.utc)
    spec = "%Y-%m-%dT%H:%M:%S.%fZ" if when.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return when.strftime(spec)
