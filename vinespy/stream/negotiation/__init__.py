"""Stream negotiation (RFC 6120 §4.3.1) as pluggable features.

Each feature is a small class, one instance per stream: it offers its part
of ``<stream:features/>`` while it applies, and takes the elements that are
its own. :class:`~vinespy.stream.client.C2S` offers and asks them
in the order of its ``features`` (STARTTLS, SASL, bind; XEP-0198 next); what
none of them takes is refused. A feature writes through the stream and asks
the transport for what only it can do (the TLS upgrade, a stream restart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ...xml import Element
from .auth import Auth
from .bind import Bind
from .starttls import StartTLS

if TYPE_CHECKING:
    from ..client import C2S

__all__ = ["Auth", "Bind", "Feature", "StartTLS"]


class Feature(Protocol):
    """One negotiation step."""

    def offer(self, stream: C2S) -> str:
        """Its part of the ``<stream:features/>`` sent now ('' for none)."""

    async def handle(self, stream: C2S, el: Element) -> bool | None:
        """None: not its element. Else it was handled: True once a new stream
        header is due (the parser was reset) or the stream is closing."""
