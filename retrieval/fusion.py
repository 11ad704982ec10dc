"""Fusions of a dense and a lexical result list computed here rather than by the store, to measure alternatives
to the store's equal-weight RRF/DBSF: DBSF with a weight per side, and sparse-first (the lexical order, dense
similarity breaking its ties, dense-only candidates after every lexical match).

Lists are (key, score) pairs, best first, as the store returns them.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def dbsf_normalise(scores: Sequence[float]) -> list[float]:
    """Distribution-based score normalisation as qdrant-client's DBSF does it: (s - low) / (high - low) with
    low, high = mean -+ 3 sample standard deviations, not clamped (an outlier, such as the one product carrying a
    code, keeps its lead); a single or all-equal list scores 0.5."""
    if len(scores) < 2:
        return [0.5] * len(scores)
    mean = statistics.fmean(scores)
    spread = 3 * statistics.stdev(scores)
    if spread == 0:
        return [0.5] * len(scores)
    low = mean - spread
    return [(s - low) / (2 * spread) for s in scores]


def weighted_dbsf(dense: Sequence[tuple[K, float]], sparse: Sequence[tuple[K, float]], dense_weight: float) -> list[K]:
    """Keys by dense_weight * normalised dense score + (1 - dense_weight) * normalised sparse score; a key absent
    from one list scores 0 there. dense_weight 0.5 ranks as the store's DBSF does."""
    fused: dict[K, float] = {}
    for side, weight in ((dense, dense_weight), (sparse, 1.0 - dense_weight)):
        for (key, _), norm in zip(side, dbsf_normalise([s for _, s in side]), strict=True):
            fused[key] = fused.get(key, 0.0) + weight * norm
    return sorted(fused, key=lambda k: -fused[k])


def sparse_first(
    sparse: Sequence[tuple[K, float]], dense: Sequence[tuple[K, float]], similarity: Mapping[K, float]
) -> list[K]:
    """Every lexical match in lexical order (equal scores ordered by dense similarity), then the dense-only ones."""
    lexical = sorted(sparse, key=lambda kv: (-round(kv[1], 6), -similarity.get(kv[0], 0.0)))
    seen = {key for key, _ in lexical}
    return [key for key, _ in lexical] + [key for key, _ in dense if key not in seen]
