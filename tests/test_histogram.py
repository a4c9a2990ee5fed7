# -*- test-case-name: tests.test_histogram -*-
"""
Tests for L{dhcp6ha.histogram}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha.histogram import DurationHistogram


class DurationHistogramTests(SynchronousTestCase):
    """L{DurationHistogram} percentiles."""

    def test_empty(self) -> None:
        """An empty histogram reports zeros."""
        self.assertEqual(
            DurationHistogram().summary(),
            {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0},
        )

    def test_percentiles(self) -> None:
        """Percentiles are within a bucket (about 9%) above the true value."""
        h = DurationHistogram()
        for ms in range(1, 1001):
            h.record(ms / 1000.0)
        for p, true in ((50, 0.5), (90, 0.9), (99, 0.99)):
            self.assertGreaterEqual(h.percentile(p), true)
            self.assertLessEqual(h.percentile(p), true * 1.1)
        self.assertEqual(h.percentile(100), 1.0)
        self.assertAlmostEqual(h.summary()["mean"], 0.5005)

    def test_snapshot(self) -> None:
        """
        A snapshot gives the non-empty buckets by index and the bounds:
        bucket C{i} holds values from C{lowest * 2 ** ((i - 1) / per_doubling)}
        up to C{lowest * 2 ** (i / per_doubling)}, so an interval's values
        are the difference of two snapshots.
        """
        h = DurationHistogram(lowest=0.001, bucketsPerDoubling=2)
        self.assertEqual(h.snapshot(), {"lowest": 0.001, "per_doubling": 2, "counts": {}})
        h.record(0.0005)
        before = h.snapshot()
        h.record(0.002)
        h.record(0.002)
        h.record(0.003)
        after = h.snapshot()
        self.assertEqual(before["counts"], {"0": 1})
        self.assertEqual(after["counts"], {"0": 1, "3": 2, "4": 1})
        for index, n in after["counts"].items():
            upper = 0.001 * 2 ** (int(index) / 2)
            lower = 0.001 * 2 ** ((int(index) - 1) / 2) if int(index) else 0.0
            values = [v for v in (0.0005, 0.002, 0.002, 0.003) if lower <= v < upper]
            self.assertEqual(len(values), n)

    def test_extremes(self) -> None:
        """Values below and above the range land in the end buckets."""
        h = DurationHistogram()
        h.record(-1.0)
        h.record(0.0)
        h.record(1e9)
        self.assertEqual((h.count, h.maximum, h.percentile(50)), (3, 1e9, 0.0001))
        self.assertEqual(h.percentile(100), 1e9)
