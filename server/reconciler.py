"""Brings every engine back to the desired state: at start-up, every `reconcile_interval` seconds, every second
while an engine is down, soon after a request finds an engine failing, and on demand.

It reads each engine's `/v1/models` (which also tells the router what the engine holds and whether it is up),
loads the active version of every adapter where it is missing (an engine restarted, or was added), and unloads
the versions of retired adapters that nothing is using. A boot version (an adapter the engine was started with)
has its path learnt from the engine the first time it is seen, so it can be restored elsewhere later.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from adapters.state import AdapterRecord, StateError
from adapters.state_store import StateConflict
from server.engines import EngineNode
from server.errors import GatewayError
from server.hotswap import AdapterService

log = logging.getLogger(__name__)

# While an engine is down it is probed this often, so that it serves again within about a second of coming back.
DOWN_PROBE_S = 1.0
# Passes woken by failing requests run at most this often: a burst of failures is one pass, not one each.
MIN_GAP_S = 1.0


@dataclass
class ReconcileReport:
    """What one pass saw and did."""

    engines_up: list[str] = field(default_factory=list)
    engines_down: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)  # "served name on engine url"
    unloaded: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Reconciler:
    """One pass with `run_once`; `run_forever` repeats it (the lifespan runs it as a task)."""

    def __init__(self, service: AdapterService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self.last: ReconcileReport | None = None
        self._unsaved = False  # learnt state the file could not take yet

    async def run_forever(self) -> None:
        """A pass every `interval` seconds; every DOWN_PROBE_S while an engine is down; and soon after a request
        finds an engine failing (the pool's `wake`), so a restarted engine gets its adapters back by itself."""
        wake = self.service.pool.wake
        while True:
            down = any(not node.up for node in self.service.pool)
            try:
                await asyncio.wait_for(wake.wait(), min(self.interval, DOWN_PROBE_S) if down else self.interval)
                await asyncio.sleep(MIN_GAP_S)
            except TimeoutError:
                pass
            wake.clear()
            try:
                await self.run_once()
            except Exception:  # a pass must never end the loop
                log.exception("reconcile pass failed")

    async def run_once(self) -> ReconcileReport:
        report = ReconcileReport()
        for node in self.service.pool:
            try:
                node.observe(await node.upstream.model_cards())
            except GatewayError as exc:
                node.mark_down(exc.message)
                report.engines_down.append(node.url)
                continue
            report.engines_up.append(node.url)
        learnt = self._learn_boot_paths()
        for record in list(self.service.state.adapters.values()):
            async with self.service.lock(record.name):
                await self._converge(record, report)
        if learnt or self._unsaved:
            await self._save()
        if self._unsaved:
            report.problems.append("the adapters' state file could not be written (see the gateway's log)")
        self.last = report
        return report

    async def observe(self) -> None:
        """Only read what each engine holds (after another replica changed the desired state)."""
        await self.service.observe_engines()

    async def _save(self) -> None:
        """Write what was learnt (boot paths, placement). These are observations, not an operator's change: if the
        state cannot be written they stay in memory, the pass goes on, and the next pass writes them again. If
        another replica wrote first, its state is taken and the next pass learns again."""
        try:
            await self.service.persist()
            self._unsaved = False
        except StateConflict:
            self._unsaved = False
        except StateError as exc:
            log.error("reconciler: %s (kept in memory, written again on the next pass)", exc)
            self._unsaved = True

    def _learn_boot_paths(self) -> bool:
        learnt = False
        for record in self.service.state.adapters.values():
            for version in record.versions.values():
                if version.path:
                    continue
                for node in self.service.pool.holders(version.served_name):
                    if root := node.roots.get(version.served_name):
                        version.path = root
                        learnt = True
                        break
        return learnt

    async def _converge(self, record: AdapterRecord, report: ReconcileReport) -> None:
        up = [n for n in self.service.pool if n.up]
        if record.retired:
            name = record.active_served_name()
            if self.service.inflight[name] == 0:
                for node in [n for n in up if name in n.served]:
                    await self._unload(node, name, report)
            return
        active = record.versions[record.active]
        placement = await self._placement(record, up)
        for node in placement:
            if active.served_name in node.served:
                continue
            if not active.path:
                report.problems.append(f"{active.served_name} missing on {node.url} and its path is unknown")
                continue
            try:
                await node.load(active.served_name, active.path)
            except GatewayError as exc:
                report.problems.append(f"loading {active.served_name} on {node.url}: {exc.message}")
                continue
            report.loaded.append(f"{active.served_name} on {node.url}")
            log.info("reconciler restored %s on %s", active.served_name, node.url)

    async def _placement(self, record: AdapterRecord, up: list[EngineNode]) -> list[EngineNode]:
        """Where the adapter should be: the engines it was placed on (remembered from what was seen holding any
        of its versions), else every up engine."""
        names = {v.served_name for v in record.versions.values()}
        known = {n.url for n in self.service.pool}
        if not known & set(record.engines):
            # Never placed, or only on engines this gateway no longer has: place it where it is seen now.
            seen = [n.url for n in up if names & n.served]
            if seen != record.engines:
                record.engines = seen
                await self._save()
        if record.engines:
            return [n for n in up if n.url in record.engines]
        return up

    async def _unload(self, node: EngineNode, name: str, report: ReconcileReport) -> None:
        try:
            await node.unload(name)
        except GatewayError as exc:
            report.problems.append(f"unloading {name} on {node.url}: {exc.message}")
            return
        report.unloaded.append(f"{name} on {node.url}")
