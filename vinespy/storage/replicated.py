"""Redis writes confirmed by replicas: a Lua script, then ``WAIT``.

Redis replicates asynchronously: a write the primary acknowledged may not
have reached its replica yet, and if the primary dies then, the replica that
Sentinel promotes lacks it. A store that must not answer "done" for such a
write runs it through :class:`Replicated`. The script and ``WAIT numreplicas
timeout`` go in one pipeline: one connection, because WAIT waits for the
writes of its own connection only, and one round trip. If fewer replicas
than asked confirm within the timeout, :class:`~vinespy.storage.NotReplicated`
is raised after the write (the primary keeps it; nothing is undone).

It waits for the replicas that are there: at most as many as the primary
has attached (``INFO replication``, read at most once a second). With none
attached (the only replica down, or a promoted replica before another
attaches) nothing can confirm a write and nothing can be promoted from an
up-to-date copy either: the write goes through unconfirmed, with a warning
in the log at most once a minute, rather than every change failing until a
replica returns. An operator who prefers refusals sets Redis's own
``min-replicas-to-write`` on the primary. A replica attached but lagging
(paused, overloaded) does not confirm in time: NotReplicated.

With 0 replicas asked it is a plain script call, without WAIT.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Sequence

from redis.exceptions import NoScriptError

from . import NotReplicated

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript


class Replicated:
    """Runs scripts on ``redis``, each confirmed by ``replicas`` replicas
    within ``timeout`` seconds (``replicas`` 0: not waited for)."""

    def __init__(self, redis: aioredis.Redis, replicas: int = 0, timeout: float = 1.0) -> None:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ValueError(f"replicas must be an int >= 0, not {replicas!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            # WAIT with a timeout of 0 blocks until the replicas answer, for ever.
            raise ValueError(f"timeout must be a number of seconds above 0, not {timeout!r}")
        self.redis = redis
        self.replicas = replicas
        self.timeout = timeout
        self._ms = max(1, round(timeout * 1000))
        self._attached = 0
        self._checked = -1e9        # monotonic time of the last INFO
        self._warned = -1e9

    async def attached(self, fresh: bool = False) -> int:
        """How many replicas the primary has attached (cached for 1 s)."""
        now = time.monotonic()
        if fresh or now - self._checked >= 1.0:
            info = await self.redis.info("replication")
            self._attached = int(info.get("connected_slaves", 0))
            self._checked = now
        return self._attached

    def _short(self, attached: int) -> None:
        now = time.monotonic()
        if now - self._warned >= 60.0:
            self._warned = now
            log.warning("the Redis primary has %d replica(s) attached, %d asked "
                        "(wait_replicas): pubsub changes are confirmed by %d; a failover "
                        "now may lose them", attached, self.replicas, attached)

    async def run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any],
                  what: str) -> Any:
        """``script``'s reply; NotReplicated (``what`` names the write in its
        message) if too few replicas confirmed it. Redis errors propagate."""
        wanted = min(self.replicas, await self.attached()) if self.replicas else 0
        if wanted < self.replicas:
            self._short(wanted)
        if not wanted:
            return await script(keys=keys, args=args)
        result, acked = await self._with_wait(script, keys, args, wanted)
        if isinstance(result, NoScriptError):
            # A Redis that has not seen the script yet (a promoted replica):
            # nothing ran. Loaded once, then run again.
            await self.redis.script_load(script.script)
            result, acked = await self._with_wait(script, keys, args, wanted)
        for reply in (result, acked):
            if isinstance(reply, Exception):
                raise reply
        if int(acked) < wanted:
            now = await self.attached(fresh=True)
            if int(acked) < min(wanted, now):
                raise NotReplicated(
                    f"{what}: not confirmed by {self._replicas(wanted)} within "
                    f"{self.timeout:g} s ({int(acked)} did): the Redis primary has it, but it "
                    f"may be lost if Redis fails over now", wanted, int(acked))
            self._short(now)        # the replica left meanwhile: goes through, said so
        return result

    async def _with_wait(self, script: AsyncScript, keys: Sequence[Any],
                         args: Sequence[Any], wanted: int) -> tuple[Any, Any]:
        """The script's reply and WAIT's, errors as values (unannotated: a
        pipeline's own error message would quote the payload)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", wanted, self._ms)
            result, acked = await pipe.execute(raise_on_error=False)
        return result, acked

    @staticmethod
    def _replicas(n: int) -> str:
        return "a Redis replica" if n == 1 else f"{n} Redis replicas"
