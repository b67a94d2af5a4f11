"""vinespy: a clustered XMPP server on asyncio."""

__version__ = "0.1.0"
