"""Redis writes confirmed by replicas: a Lua script, then ``WAIT``.

Redis replicates asynchronously: a write the primary acknowledged may not
have reached its replica yet, and if the primary dies then, the replica that
Sentinel promotes lacks it. A store that must not answer "done" for such a
write runs it through :class:`Replicated`. The script and ``WAIT numreplicas
timeout`` go in one pipeline: one connection, because WAIT waits for the
writes of its own connection only, and one round trip. If fewer replicas
than asked confirm within the timeout, :class:`~vinespy.storage.NotReplicated`
is raised after the write (the primary keeps it; nothing is undone).

With 0 replicas it is a plain script call, without WAIT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from redis.exceptions import NoScriptError

from . import NotReplicated

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

    async def run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any],
                  what: str) -> Any:
        """``script``'s reply; NotReplicated (``what`` names the write in its
        message) if too few replicas confirmed it. Redis errors propagate."""
        if not self.replicas:
            return await script(keys=keys, args=args)
        result, acked = await self._with_wait(script, keys, args)
        if isinstance(result, NoScriptError):
            # A Redis that has not seen the script yet (a promoted replica):
            # nothing ran. Loaded once, then run again.
            await self.redis.script_load(script.script)
            result, acked = await self._with_wait(script, keys, args)
        for reply in (result, acked):
            if isinstance(reply, Exception):
                raise reply
        if int(acked) < self.replicas:
            raise NotReplicated(
                f"{what}: not confirmed by {self._replicas()} within {self.timeout:g} s "
                f"({int(acked)} did): the Redis primary has it, but it may be lost if Redis "
                f"fails over now", self.replicas, int(acked))
        return result

    async def _with_wait(self, script: AsyncScript, keys: Sequence[Any],
                         args: Sequence[Any]) -> tuple[Any, Any]:
        """The script's reply and WAIT's, errors as values (unannotated: a
        pipeline's own error message would quote the payload)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.replicas, self._ms)
            result, acked = await pipe.execute(raise_on_error=False)
        return result, acked

    def _replicas(self) -> str:
        return "a Redis replica" if self.replicas == 1 else f"{self.replicas} Redis replicas"
