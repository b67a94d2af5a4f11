"""The cluster's Redis key schema (docs/cluster.md, "Data model").

Every key vinespy keeps in Redis is named here, so that the server, the
operator commands and the tests agree on them:

=========================  ======  ==============================================
key                        type    lifetime
=========================  ======  ==============================================
``cluster:nodes``          HASH    one field per registered node, from its
                                   registration until it leaves or is cleaned
                                   up as dead
``cluster:node:{id}``      HASH    the same as the node's field in
                                   ``cluster:nodes``
``cluster:node:{id}:jids`` SET     a member per bound resource, from bind to
                                   unbind; deleted with the node
``sessions:{bare}``        HASH    a field per bound resource, from bind to
                                   unbind or its node's cleanup
``cluster:sets:{sid}``     SET     while session ``sid`` is bound; deleted with
                                   its routing entry
``cluster:lock:{name}``    STRING  while ``exclusive(name)`` is held, at most
                                   its TTL (``sessions.LOCK_TTL_MS``)
``cluster:duty:{name}``    STRING  the token of the node holding duty ``name``
                                   (or ``released``), at most its TTL
``cluster:inbox:{id}``     STREAM  capped at ``inbox_maxlen`` entries; deleted
                                   with the node
``cluster:events``         STREAM  capped at ``inbox_maxlen`` entries; kept
``cluster:acks:{id}``      HASH    rewritten by every heartbeat of the node;
                                   expires a minute after its cleanup
=========================  ======  ==============================================

The Lua scripts of :mod:`vinespy.cluster.scripts` derive ``sessions:{bare}``
and ``cluster:sets:{sid}`` themselves, spelt as here. The pubsub
service's keys (``pubsub:{service}:...``) are listed in
:mod:`vinespy.storage.pubsub.redis`; the caps cache's (``caps:{hash}:{ver}``,
a STRING per verified XEP-0115 'ver') in :mod:`vinespy.modules.caps`.
"""

from __future__ import annotations

import socket

# node id -> its last heartbeat, Redis server time in ms (TIME, never a local clock)
NODES = "cluster:nodes"


# STREAM every node reads: routing-table invalidations and user changes
EVENTS = "cluster:events"

# STRING: the dialback secret every node makes its XEP-0185 keys with (written
# once, by the first node that needs it, unless [server] dialback_secret is set)
DIALBACK_SECRET = "s2s:dialback-secret"


def node_info(node: str) -> str:
    """HASH of a node: pid, host, started (ms), incarnation, sessions (count),
    acked (the last inbox entry it handled)."""
    return f"cluster:node:{node}"


def node_jids(node: str) -> str:
    """SET of the full JIDs bound at ``node`` (for its cleanup)."""
    return f"cluster:node:{node}:jids"


def inbox(node: str) -> str:
    """STREAM of what other nodes send ``node`` (stanzas, invalidations...)."""
    return f"cluster:inbox:{node}"


def acks(node: str) -> str:
    """HASH ``{sender node}/{incarnation}`` -> the last sequence number of
    that sender's inbox entries ``node`` handled (``"!"`` appended: it
    dropped one after a gap), written with each heartbeat (confirm.py)."""
    return f"cluster:acks:{node}"


def sessions(bare: str) -> str:
    """HASH resource -> JSON {node, sid, available, priority, presence, fields}."""
    return f"sessions:{bare}"


def sets(sid: str) -> str:
    """SET of the members of the session ``sid``'s shared set fields, each
    ``"<field key> <member>"`` (``presence.directed bob@x.lit``: the JIDs it
    sent directed presence to, RFC 6121 §4.6), for whoever cleans up after
    its node; gone with the session."""
    return f"cluster:sets:{sid}"


def kept(name: str) -> str:
    """LIST of what a session kept without a connection holds (XEP-0198:
    the stanzas its client did not acknowledge, ``name`` its resumption
    token), for whoever cleans up if its node dies; expires after the
    session's resumption time."""
    return f"cluster:kept:{name}"


def lock(name: str) -> str:
    """STRING holding the token of the task that holds ``exclusive(name)``."""
    return f"cluster:lock:{name}"


def duty(name: str) -> str:
    """STRING holding the token of the node that holds duty ``name``, or
    ``released`` for a TTL after its holder let it go (cluster/duty.py)."""
    return f"cluster:duty:{name}"


def default_node_id(port: int) -> str:
    """A node id that is stable across restarts of the same server, so that
    a node starting up finds (and removes) its previous incarnation's leftovers."""
    return f"{socket.gethostname()}-{port}"
