# -*- test-case-name: tests.test_histogram -*-
"""
L{DurationHistogram}: percentiles of durations in constant memory, for
status and benchmarks.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DurationHistogram"]


class DurationHistogram:
    """
    Durations (seconds) in a fixed log-scale histogram: constant memory,
    percentiles within one bucket (about 9% with the default 8 buckets per
    doubling).  The update queue's replication lag (enqueued to acked), the
    server's response time (datagram received to Reply sent).

    @ivar count: values recorded.
    @ivar total: their sum.
    @ivar maximum: the largest (0 when none).
    """

    def __init__(
        self, lowest: float = 1e-4, highest: float = 1e5, bucketsPerDoubling: int = 8
    ) -> None:
        self._lowest = lowest
        self._perDoubling = bucketsPerDoubling
        self._buckets = [0] * (self._index(highest) + 1)
        self.count = 0
        self.total = 0.0
        self.maximum = 0.0

    def _index(self, value: float) -> int:
        if value <= self._lowest:
            return 0
        return 1 + int(math.log2(value / self._lowest) * self._perDoubling)

    def _upper(self, index: float) -> float:
        """The upper bound of bucket C{index}."""
        return float(self._lowest * 2 ** (index / self._perDoubling))

    def record(self, seconds: float) -> None:
        """Add one measurement."""
        seconds = max(0.0, seconds)
        self._buckets[min(self._index(seconds), len(self._buckets) - 1)] += 1
        self.count += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)

    def percentile(self, p: float) -> float:
        """
        The C{p}th percentile (0-100): the upper bound of the bucket holding
        it, never above the maximum recorded; 0 when nothing is recorded.
        """
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        last = len(self._buckets) - 1
        for index, n in enumerate(self._buckets):
            seen += n
            if seen >= rank:
                return self.maximum if index == last else min(self._upper(index), self.maximum)
        return self.maximum

    def snapshot(self) -> dict[str, Any]:
        """
        The buckets, for a benchmark that wants the percentiles of an
        interval: the difference of two snapshots' C{counts}.  Bucket C{i}
        holds values from C{lowest * 2 ** ((i - 1) / per_doubling)} up to
        (not including) C{lowest * 2 ** (i / per_doubling)} (bucket 0: up to
        C{lowest}); C{counts} maps the index (as text, for JSON) of each
        non-empty bucket to its count.
        """
        return {
            "lowest": self._lowest,
            "per_doubling": self._perDoubling,
            "counts": {str(i): n for i, n in enumerate(self._buckets) if n},
        }

    def summary(self) -> dict[str, float]:
        """Count, mean, median, p90, p99 and maximum, for status and benchmarks."""
        return {
            "count": self.count,
            "mean": self.total / self.count if self.count else 0.0,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "max": self.maximum,
        }
