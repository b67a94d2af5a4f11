"""Who sent an HTTP request (:class:`Client`), as the listener
(:mod:`vinespy.http.app`) works it out, for the transports and the relay."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Client:
    """Who sent an HTTP request, as far as it can be told."""

    peer: tuple[str, int]       # the client's address (after trusted proxies)
    secure: bool                # counts as encrypted (see the module's docstring)
    scheme: str                 # "https" or "http", as the client sees this server
    origin: str                 # this server's origin for that client
    host: str = ""              # the Host it asked for (name[:port])
