"""Bucketed rolling-window arithmetic shared by every store (pure: no I/O, no state).

A rolling window is kept as a map of bucket id -> micro-dollars:

- hourly: one-minute buckets; the window sums the current (partial) bucket plus the 60 full
  buckets before it;
- daily: one-hour buckets; the current bucket plus the 24 full ones before it.

A bucket leaves the window all at once, when its last second is more than a window old. So
spend made at `t` counts for every `now` in [t, t + window] and drops out by at most one
bucket later: a window may hold spend up to one bucket longer than an exact rolling window,
never shorter. It can over-enforce by one bucket's spend, it never under-enforces.

Buckets *newer* than the current one (another replica's clock a little ahead) count too, so
clock skew between replicas cannot hide spend either. Bucket ids are `floor(at / bucket_secs)`
on the caller's clock, which makes ids from different replicas comparable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.store.base import Window


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """How one window is cut: `full_buckets` complete buckets of `bucket_secs` each, plus the
    current partial one."""

    bucket_secs: int
    full_buckets: int

    @property
    def retention_secs(self) -> int:
        """How long after its last write a bucket can still count (an idle window's lifetime)."""
        return (self.full_buckets + 1) * self.bucket_secs


_HOURLY = BucketSpec(bucket_secs=60, full_buckets=60)
_DAILY = BucketSpec(bucket_secs=3600, full_buckets=24)


def spec(window: Window) -> BucketSpec:
    return _HOURLY if window is Window.HOURLY else _DAILY


def bucket_id(window: Window, at: float) -> int:
    """The bucket holding the instant `at` (seconds on the caller's clock)."""
    return math.floor(at / spec(window).bucket_secs)


def oldest_live_bucket(window: Window, now: float) -> int:
    """The smallest bucket id that still counts in the window ending at `now`."""
    return bucket_id(window, now) - spec(window).full_buckets


def window_total(buckets: Mapping[int, int], window: Window, now: float) -> int:
    """Micro-dollars of the window ending at `now` (future buckets included, see above)."""
    oldest = oldest_live_bucket(window, now)
    return sum(micros for bucket, micros in buckets.items() if bucket >= oldest)


def stale_buckets(buckets: Iterable[int], window: Window, now: float) -> list[int]:
    """Bucket ids that can never count again for any window ending at or after `now`."""
    oldest = oldest_live_bucket(window, now)
    return [bucket for bucket in buckets if bucket < oldest]
