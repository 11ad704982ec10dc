"""Adapter versions at runtime: register, swap, roll back and retire, with no failed request.

A swap loads the new version on every engine that serves the adapter, under its own versioned name, sends each
engine a warm-up request (the first request to a new adapter compiles kernels: that wait must not fall on a
user), then switches the adapter's active version in one step. Requests already running on the old version
finish there; once none is left, the old version is unloaded. Every operation on one adapter holds that
adapter's lock, so two swaps never interleave; nothing changes unless validation and loading succeeded.

The desired state lives in a store (adapters.state_store): a file for one gateway process, Redis for several.
With a shared store the adapter's lock spans the replicas, the operation starts from the newest stored state, its
write is a compare-and-set (applied again on a newer state if another replica wrote meanwhile), and `follow`
applies what other replicas write within the store's propagation bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread

from adapters.state import AdapterRecord, DesiredState, StateError, VersionRecord, version_served_name
from adapters.state_store import DesiredStateStore, StateBusy, StateConflict
from adapters.validation import AdapterInvalid, validate_adapter
from server.engines import EngineNode, EnginePool
from server.errors import GatewayError, InvalidRequest, ModelNotFound, StateUnwritable, UpstreamError

log = logging.getLogger(__name__)

MAX_HISTORY = 20  # earlier active versions kept for rollback
WARM_PROMPT = "Warm-up request of a new adapter version: " + "ready? " * 24


@dataclass
class SwapReport:
    """What a swap did, with the time each step took (seconds)."""

    adapter: str
    active: str
    served_name: str
    previous: str | None
    engines: list[str]
    validate_s: float = 0.0
    load_s: float = 0.0
    warm_s: float = 0.0
    total_s: float = 0.0
    draining: str | None = None
    notes: list[str] = field(default_factory=list)


class AdapterService:
    """The registry of adapter versions, the in-flight count of each served name, and the operations."""

    def __init__(
        self,
        store: DesiredStateStore,
        state: DesiredState,
        pool: EnginePool,
        roots: Sequence[Path],
        max_rank: int,
        base_names: Sequence[str],
        drain_timeout: float = 600.0,
        revision: int = 0,
    ) -> None:
        self.store = store
        self.state = state
        self.revision = revision
        self.pool = pool
        self.roots = list(roots)
        self.max_rank = max_rank
        self.base_names = list(base_names)
        self.drain_timeout = drain_timeout
        self.inflight: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.load_seconds: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._drains: set[asyncio.Task[None]] = set()
        self._writing = asyncio.Lock()  # one read-modify-write of the stored state at a time in this process

    # --- the request path: no awaits, so a swap is seen atomically ---

    def served_for(self, adapter: str) -> str:
        """The served name new requests for `adapter` go to (404 once it is retired)."""
        record = self.state.adapters.get(adapter)
        if record is None:
            return adapter
        if record.retired:
            raise ModelNotFound(f"the adapter {adapter!r} of this assistant has been retired", param="model")
        return record.active_served_name()

    def acquire(self, name: str) -> None:
        self.inflight[name] += 1
        self._idle.setdefault(name, asyncio.Event()).clear()

    def release(self, name: str) -> None:
        self.inflight[name] -= 1
        self.served[name] += 1
        if self.inflight[name] <= 0:
            del self.inflight[name]
            self._idle.setdefault(name, asyncio.Event()).set()

    # --- operations ---

    @asynccontextmanager
    async def lock(self, adapter: str) -> AsyncIterator[None]:
        """This adapter's lock: in this process, then in the store (other replicas), then the newest state."""
        async with self._locks.setdefault(adapter, asyncio.Lock()):
            try:
                async with self.store.lock(adapter):
                    await self.refresh()
                    if self.store.shared:  # other replicas load and unload too: what this one saw may be stale
                        await self.observe_engines()
                    yield
            except StateBusy as exc:
                raise GatewayError(str(exc), status=409, code="adapter_busy") from None
            except StateConflict:
                raise
            except StateError as exc:
                log.error("adapter %s: the state store failed: %s", adapter, exc)
                raise StateUnwritable(
                    "the adapters' state store could not be reached; nothing was changed (see the gateway's log)"
                ) from None

    async def observe_engines(self) -> None:
        """Read what each engine holds now (`/v1/models`); an engine that does not answer is marked down."""
        for node in self.pool:
            try:
                node.observe(await node.upstream.model_cards())
            except GatewayError as exc:
                node.mark_down(exc.message)

    async def refresh(self) -> bool:
        """Take the stored state if another process wrote a newer one; True if it did."""
        async with self._writing:
            state, revision = await self.store.load()
            if revision == self.revision:
                return False
            self._apply(state, revision)
            return True

    def _apply(self, state: DesiredState, revision: int) -> None:
        # In place, record by record: running operations and drains hold these objects.
        for name, new in state.adapters.items():
            record = self.state.adapters.get(name)
            if record is None:
                self.state.adapters[name] = new
                continue
            for field_name in AdapterRecord.model_fields:
                setattr(record, field_name, getattr(new, field_name))
        for name in set(self.state.adapters) - set(state.adapters):
            del self.state.adapters[name]
        self.revision = revision

    async def follow(self, on_change: Callable[[], Any] | None = None) -> None:
        """Apply each revision other replicas write (a task for the gateway's lifetime; shared stores only)."""
        async for _ in self.store.changes(self.revision):
            try:
                if await self.refresh() and on_change is not None:
                    await on_change()
            except Exception:  # a failed refresh must not end the task: the next change retries
                log.exception("applying the adapters' stored state failed")

    async def persist(self) -> None:
        """Write the state as it is in memory (what the reconciler learnt); StateError if it cannot be, and
        StateConflict if another replica wrote first (the newer state is taken; the next pass learns again)."""
        async with self._writing:
            try:
                self.revision = await self.store.save(self.state, self.revision)
            except StateConflict:
                state, revision = await self.store.load()
                self._apply(state, revision)
                raise

    def record(self, adapter: str) -> AdapterRecord:
        record = self.state.adapters.get(adapter)
        if record is None:
            known = ", ".join(sorted(self.state.adapters)) or "none"
            raise ModelNotFound(f"no assistant uses an adapter named {adapter!r}; adapters: {known}", param="name")
        return record

    async def register(self, adapter: str, path: str, load: bool = True) -> tuple[VersionRecord, float, float]:
        """Validate and record a new version (loading it on the adapter's engines unless `load` is false);
        returns it with the seconds validation and loading took."""
        async with self.lock(adapter):
            return await self._register(self.record(adapter), path, load)

    async def _register(self, record: AdapterRecord, path: str, load: bool) -> tuple[VersionRecord, float, float]:
        began = time.perf_counter()
        bases = [*self.base_names, *self.pool.base_roots()]
        try:
            info = await anyio.to_thread.run_sync(validate_adapter, path, self.roots, bases, self.max_rank)
        except AdapterInvalid as exc:
            raise InvalidRequest(str(exc), param=exc.field, code="invalid_adapter") from None
        validated = time.perf_counter()
        version = info.short_hash
        existing = record.versions.get(version)
        candidate = existing or VersionRecord(
            version=version,
            served_name=version_served_name(record.name, version),
            path=str(info.path),
            digest=info.digest,
            rank=info.rank,
        )
        if load:
            await self._load_everywhere(record, candidate)
        loaded = time.perf_counter()
        if existing is None:
            try:
                await self._commit(record, lambda r: r.versions.__setitem__(version, candidate))
            except StateUnwritable:
                if load:  # nothing may change: the engines drop the version again too
                    for node in self.pool.holders(candidate.served_name):
                        await self._unload(node, candidate.served_name)
                raise
        return candidate, validated - began, loaded - validated

    def _targets(self, record: AdapterRecord) -> list[EngineNode]:
        """The up engines that serve this adapter: where it was placed, else those holding its active version,
        else all. A down engine gets the active version from the reconciler when it is back."""
        up = [n for n in self.pool if n.up]
        if record.engines:
            placed = [n for n in up if n.url in record.engines]
        else:
            placed = [n for n in up if record.active_served_name() in n.served]
        if not (placed or up):
            raise GatewayError("no engine is up to load the adapter on", status=503, code="upstream_unavailable")
        return placed or up

    async def _load_everywhere(self, record: AdapterRecord, version: VersionRecord) -> None:
        """Load `version` on every target engine that lacks it; on any failure unload what was loaded."""
        if version.path is None:
            raise InvalidRequest(f"version {version.version!r} has no known path to load it from", param="version")
        done: list[EngineNode] = []
        try:
            for node in self._targets(record):
                if version.served_name in node.served:
                    continue
                began = time.perf_counter()
                await node.load(version.served_name, version.path)
                self.load_seconds[version.served_name] = time.perf_counter() - began
                done.append(node)
        except GatewayError:
            for node in done:
                await self._unload(node, version.served_name)
            raise

    async def _warm(self, nodes: list[EngineNode], name: str) -> None:
        payload = {"model": name, "prompt": WARM_PROMPT, "max_tokens": 2, "temperature": 0}
        for node in nodes:
            # The engine's answer can quote paths and internals: it goes to the log, the client gets the status.
            try:
                response = await node.upstream.client.post("/v1/completions", json=payload, timeout=120)
            except Exception as exc:  # noqa: BLE001 - any failure means the version cannot take traffic
                log.warning("warm-up of %s on %s failed: %r", name, node.url, exc)
                raise UpstreamError(
                    f"warm-up of {name} on {node.url} failed ({type(exc).__name__})", code="warmup_failed"
                ) from None
            if response.status_code != 200:
                log.warning("warm-up of %s on %s: %s %s", name, node.url, response.status_code, response.text[:500])
                raise UpstreamError(
                    f"warm-up of {name} on {node.url} failed (HTTP {response.status_code})", code="warmup_failed"
                )

    async def swap(self, adapter: str, version: str | None = None, path: str | None = None) -> SwapReport:
        """Make `version` (or the version at `path`, registered first) the active one."""
        began = time.perf_counter()
        async with self.lock(adapter):
            record = self.record(adapter)
            validate_s = load_s = 0.0
            if path is not None:
                target, validate_s, load_s = await self._register(record, path, load=True)
            elif version is not None and version in record.versions:
                target = record.versions[version]
            else:
                known = ", ".join(sorted(record.versions))
                raise InvalidRequest(f"{adapter!r} has no version {version!r}; versions: {known}", param="version")
            report = await self._switch(record, target, began, history=True)
            report.validate_s, report.load_s = validate_s, report.load_s + load_s
            return report

    async def rollback(self, adapter: str) -> SwapReport:
        """Go back to the version active before the current one."""
        began = time.perf_counter()
        async with self.lock(adapter):
            record = self.record(adapter)
            if not record.history:
                raise InvalidRequest(f"{adapter!r} has no earlier version to roll back to", param="name")
            return await self._switch(record, record.versions[record.history[-1]], began, history=False)

    async def _switch(self, record: AdapterRecord, target: VersionRecord, began: float, history: bool) -> SwapReport:
        old = record.versions[record.active]
        if target.version == record.active and not record.retired:
            return SwapReport(record.name, target.version, target.served_name, None, [], notes=["already active"])
        nodes = self._targets(record)
        load_began = time.perf_counter()
        await self._load_everywhere(record, target)
        loaded = time.perf_counter()
        try:
            await self._warm(nodes, target.served_name)
        except GatewayError:
            if target.version != record.active:
                for node in nodes:
                    await self._unload(node, target.served_name)
            raise
        warmed = time.perf_counter()
        # The switch: from here on every new request resolves to the new served name.
        was_retired = record.retired

        def switch(r: AdapterRecord) -> None:
            if history and not was_retired:
                r.history = [*r.history, r.active][-MAX_HISTORY:]
            elif not history:
                r.history = r.history[:-1]  # a rollback consumes the entry it went back to
            r.active, r.retired = target.version, False

        try:
            await self._commit(record, switch)
        except StateUnwritable:
            if target.version != old.version:
                for node in nodes:
                    await self._unload(node, target.served_name)
            raise
        report = SwapReport(
            adapter=record.name,
            active=target.version,
            served_name=target.served_name,
            previous=old.version,
            engines=[n.url for n in nodes],
            load_s=loaded - load_began,
            warm_s=warmed - loaded,
            total_s=time.perf_counter() - began,
        )
        if old.served_name != target.served_name:
            report.draining = old.served_name
            self._drain_then_unload(record, old.served_name)
        return report

    async def retire(self, adapter: str) -> dict[str, Any]:
        """New requests get 404; running ones finish; then the active version is unloaded everywhere."""
        async with self.lock(adapter):
            record = self.record(adapter)
            await self._commit(record, lambda r: setattr(r, "retired", True))
            name = record.active_served_name()
            self._drain_then_unload(record, name)
            return {"adapter": adapter, "retired": True, "draining": name, "in_flight": self.inflight[name]}

    def _drain_then_unload(self, record: AdapterRecord, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._drain_and_unload(record, name))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain_and_unload(self, record: AdapterRecord, name: str) -> None:
        idle = self._idle.setdefault(name, asyncio.Event())
        if self.inflight[name] <= 0:
            idle.set()
        try:
            await asyncio.wait_for(idle.wait(), self.drain_timeout)
        except TimeoutError:
            log.warning(
                "%s still had %d requests after %.0f s; unloading", name, self.inflight[name], self.drain_timeout
            )
        if self.store.shared:
            # Other replicas switch within the store's bound; give their new requests that long to move over.
            await asyncio.sleep(self.store.propagation * 2)
        async with self.lock(record.name):
            wanted = {v.served_name for v in record.wanted()}
            if name in wanted:
                return  # switched back to it meanwhile
            for node in self.pool.holders(name):
                await self._unload(node, name)

    async def _unload(self, node: EngineNode, name: str) -> None:
        try:
            await node.unload(name)
        except GatewayError as exc:
            log.warning("unloading %s from %s failed: %s", name, node.url, exc.message)

    async def aclose(self) -> None:
        for task in list(self._drains):
            task.cancel()
        await asyncio.gather(*list(self._drains), return_exceptions=True)

    async def _commit(self, record: AdapterRecord, change: Callable[[AdapterRecord], None]) -> None:
        """Apply `change` to `record` and write the state; if it cannot be written (disk full, no permission,
        Redis down), undo the change so memory and store still agree, and refuse with StateUnwritable (503). If
        another replica wrote first (another adapter: this one's lock is held), apply it again on the newer state."""
        async with self._writing:
            for _ in range(10):
                before = record.model_copy(deep=True)
                change(record)
                try:
                    self.revision = await self.store.save(self.state, self.revision)
                    return
                except StateConflict:
                    _restore(record, before)
                    state, revision = await self.store.load()
                    self._apply(state, revision)
                except StateError as exc:
                    _restore(record, before)
                    log.error("adapter %s: change refused, state not written: %s", record.name, exc)
                    raise StateUnwritable(
                        "the adapters' state could not be written; nothing was changed (see the gateway's log)"
                    ) from None
            raise StateUnwritable("the adapters' state kept changing under this write; nothing was changed")

    def describe(self) -> list[dict[str, Any]]:
        """Every adapter and its versions, with served names, state, load time and requests served."""
        out: list[dict[str, Any]] = []
        for record in self.state.adapters.values():
            versions = []
            for v in record.versions.values():
                engines = [n.url for n in self.pool.holders(v.served_name)]
                if v.version == record.active:
                    state = "retired" if record.retired else "active"
                else:
                    state = "loaded" if engines else "unloaded"
                versions.append(
                    {
                        **v.model_dump(),
                        "state": state,
                        "loaded_on": engines,
                        "load_seconds": self.load_seconds.get(v.served_name),
                        "requests_served": self.served[v.served_name],
                        "in_flight": self.inflight[v.served_name],
                    }
                )
            out.append(
                {
                    "name": record.name,
                    "active": record.active,
                    "served_name": record.active_served_name(),
                    "retired": record.retired,
                    "history": record.history,
                    "versions": versions,
                }
            )
        return out


def _restore(record: AdapterRecord, before: AdapterRecord) -> None:
    for name in AdapterRecord.model_fields:
        setattr(record, name, getattr(before, name))
