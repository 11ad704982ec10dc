"""Admission control: how many requests an engine may hold before the gateway refuses more, fast.

vLLM queues whatever it is sent. On a slow engine a burst then waits minutes for its first token and times out in
the client, having cost the engine work for nobody. The gateway bounds each engine's outstanding requests by
their estimated wait instead: by Little's law a new request finishes after about (outstanding + 1) / throughput
seconds, where throughput is the engine's measured completion rate while it had work. Requests whose estimate
exceeds `max_wait` are refused at once (503, `Retry-After`). The bound adapts by itself: a GPU completing 50
requests a second admits hundreds, a CPU completing one every two seconds a handful. `min_inflight` requests
are always admitted (also at start-up, before a rate is measured), and `max_inflight`, when set, caps any engine
whatever its rate. The estimate is cautious: a rate measured at low concurrency understates what batching more
requests would give, so the bound grows as the admitted load shows the engine keeps up.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Busy seconds of history the rate is measured over: long enough to span several completions of slow requests.
WINDOW_S = 60.0
# Below this much busy time a rate says little (one early completion would read as a huge rate)...
MIN_BUSY_S = 2.0
# ...unless this many completions were seen in it: a fast engine proves its rate in milliseconds, and refusing it
# load for its first 2 busy seconds would turn a burst against it into 503s for nothing.
MIN_COMPLETIONS = 8


@dataclass(frozen=True)
class AdmissionPolicy:
    """The bounds (GatewaySettings' admission_* fields); `max_wait` 0 turns the wait bound off."""

    max_wait: float = 20.0
    min_inflight: int = 8
    max_inflight: int = 0


class CompletionRate:
    """Requests completed per second of busy time (time with at least one request outstanding), over the last
    `WINDOW_S` busy seconds. Idle time is left out: a quiet hour must not read as a slow engine."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._busy = 0.0  # busy seconds up to `_since`
        self._since: float | None = None  # when the current busy spell began (None: idle)
        self._done: deque[float] = deque()  # busy-time stamps of completions

    def busy_time(self) -> float:
        return self._busy + (self._clock() - self._since if self._since is not None else 0.0)

    def started(self, outstanding_before: int) -> None:
        if outstanding_before == 0:
            self._since = self._clock()

    def finished(self, outstanding_after: int, completed: bool) -> None:
        now = self.busy_time()
        if completed:
            self._done.append(now)
        if outstanding_after == 0 and self._since is not None:
            self._busy, self._since = now, None
        while self._done and self._done[0] < now - WINDOW_S:
            self._done.popleft()

    def per_second(self) -> float | None:
        """The rate, or None until enough busy time has been seen."""
        busy = self.busy_time()
        recent = sum(1 for stamp in self._done if stamp >= busy - WINDOW_S)
        if busy < MIN_BUSY_S and recent < MIN_COMPLETIONS:
            return None
        return recent / max(min(busy, WINDOW_S), 1e-3)


def admits(policy: AdmissionPolicy, outstanding: int, rate: float | None) -> bool:
    """Whether an engine with `outstanding` requests and completion `rate` takes one more."""
    if policy.max_inflight and outstanding >= policy.max_inflight:
        return False
    if outstanding < policy.min_inflight or not policy.max_wait:
        return True
    if rate is None:
        return False  # beyond the start-up allowance nothing is known about this engine's speed yet
    return (outstanding + 1) / rate <= policy.max_wait if rate > 0 else False


def retry_after(policy: AdmissionPolicy, outstanding: int, rate: float | None) -> float:
    """Seconds until a refused request would probably be admitted: the excess over the bound, drained at `rate`."""
    if not rate:
        return 1.0
    bound = max(policy.min_inflight, math.floor(rate * policy.max_wait)) if policy.max_wait else outstanding
    if policy.max_inflight:
        bound = min(bound, policy.max_inflight)
    return max(1.0, (outstanding + 1 - bound) / rate)
