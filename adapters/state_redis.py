"""The adapters' desired state in Redis, shared by several gateway replicas (LORAG_REDIS_URL).

Keys, under a prefix (default `lorag:`): `state` (the DesiredState JSON), `rev` (its revision, an integer), the
pub/sub channel `changed` (each new revision is published there) and `lock:<adapter>` (one adapter's lock).
A write is one Lua script: it compares `rev` with the revision the change was based on, and only if equal writes
the state, increments `rev` and publishes it, so two replicas can never overwrite each other's change unseen.
Readers learn of a new revision from the channel, and, should a message be lost (a reconnect), from reading
`rev` every `poll` seconds: a change reaches every replica within `poll` seconds.

An adapter's lock is redis-py's token lock with a time to live, renewed while it is held, so a replica killed in
the middle of a swap blocks that adapter for at most `lock_ttl` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import LockError, RedisError

from adapters.state import DesiredState, StateError
from adapters.state_store import StateBusy, StateConflict

log = logging.getLogger(__name__)

# KEYS: state, rev, channel; ARGV: new state JSON, expected revision. Returns the new revision, or -1.
_CAS = """
local rev = tonumber(redis.call('GET', KEYS[2]) or '0')
if rev ~= tonumber(ARGV[2]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
rev = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], rev)
return rev
"""


class RedisStateStore:
    """DesiredStateStore over one Redis server."""

    shared = True

    def __init__(
        self,
        url: str,
        prefix: str = "lorag:",
        poll: float = 0.5,
        lock_ttl: float = 30.0,
        lock_wait: float = 120.0,
    ) -> None:
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True)
        self.keys = [f"{prefix}state", f"{prefix}rev", f"{prefix}changed"]
        self.prefix = prefix
        self.propagation = poll
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        self._cas = self.client.register_script(_CAS)

    def _where(self) -> str:
        # The URL can carry a password: name the host only.
        host = self.client.connection_pool.connection_kwargs.get("host", "?")
        port = self.client.connection_pool.connection_kwargs.get("port", "?")
        return f"Redis at {host}:{port}"

    async def load(self) -> tuple[DesiredState, int]:
        try:
            text, rev = await self.client.mget(self.keys[0], self.keys[1])
        except RedisError as exc:
            raise StateError(f"cannot read the adapters' state from {self._where()}: {exc}") from exc
        try:
            state = DesiredState.model_validate_json(text) if text else DesiredState()
        except ValidationError as exc:
            raise StateError(f"the adapters' state in {self._where()} is not valid: {exc}") from exc
        return state, int(rev or 0)

    async def save(self, state: DesiredState, expected: int) -> int:
        try:
            rev = int(await self._cas(keys=self.keys, args=[state.model_dump_json(), expected]))
        except RedisError as exc:
            raise StateError(f"cannot write the adapters' state to {self._where()}: {exc}") from exc
        if rev < 0:
            raise StateConflict(f"the adapters' state moved past revision {expected}")
        return rev

    def lock(self, adapter: str) -> AbstractAsyncContextManager[None]:
        return self._held(adapter)

    @asynccontextmanager
    async def _held(self, adapter: str) -> AsyncIterator[None]:
        lock = self.client.lock(
            f"{self.prefix}lock:{adapter}", timeout=self.lock_ttl, blocking_timeout=self.lock_wait, thread_local=False
        )
        try:
            acquired = await lock.acquire()
        except RedisError as exc:
            raise StateError(f"cannot lock adapter {adapter!r} in {self._where()}: {exc}") from exc
        if not acquired:
            raise StateBusy(f"adapter {adapter!r} stayed locked by another gateway for {self.lock_wait:.0f} s")
        renew = asyncio.get_running_loop().create_task(self._renew(lock))
        try:
            yield
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
            with contextlib.suppress(LockError, RedisError):  # expired: nothing to release
                await lock.release()

    async def _renew(self, lock: aioredis.lock.Lock) -> None:
        while True:
            await asyncio.sleep(self.lock_ttl / 3)
            try:
                await lock.reacquire()
            except (LockError, RedisError) as exc:
                log.warning("could not renew %s: %s", lock.name, exc)

    async def changes(self, since: int) -> AsyncIterator[int]:
        last = since
        pubsub = self.client.pubsub()
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(self.keys[2])
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.propagation)
                    rev = int(await self.client.get(self.keys[1]) or 0)
                except (RedisError, OSError) as exc:
                    log.warning("adapters' state: %s unreachable (%s); retrying", self._where(), exc)
                    await pubsub.reset()
                    await asyncio.sleep(self.propagation)
                    continue
                if rev != last:
                    last = rev
                    yield rev
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        await self.client.aclose()
