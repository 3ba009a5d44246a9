"""The bucket arithmetic both stores share."""

from __future__ import annotations

from gateway.store import windows
from gateway.store.base import WINDOW_SECS, Window


def test_bucket_ids_follow_the_clock() -> None:
    assert windows.bucket_id(Window.HOURLY, 0) == 0
    assert windows.bucket_id(Window.HOURLY, 59.999) == 0
    assert windows.bucket_id(Window.HOURLY, 60) == 1
    assert windows.bucket_id(Window.DAILY, 7199) == 1
    assert windows.bucket_id(Window.HOURLY, -1) == -1  # floor, not truncation


def test_a_window_spans_its_full_length_plus_the_current_bucket() -> None:
    for window in Window:
        spec = windows.spec(window)
        assert spec.full_buckets * spec.bucket_secs == WINDOW_SECS[window]
        assert spec.retention_secs == WINDOW_SECS[window] + spec.bucket_secs


def test_spend_counts_for_at_least_a_window_and_at_most_one_bucket_more() -> None:
    for window in Window:
        spec = windows.spec(window)
        for at in (1_000_000.0, 1_000_000.0 + spec.bucket_secs - 0.001, 1_000_000.5):
            buckets = {windows.bucket_id(window, at): 7}
            length = WINDOW_SECS[window]
            for now in (at, at + length / 2, at + length):
                assert windows.window_total(buckets, window, now) == 7
            assert windows.window_total(buckets, window, at + length + spec.bucket_secs) == 0


def test_future_buckets_count_and_stale_ones_are_listed() -> None:
    now = 10_000 * 60.0
    current = windows.bucket_id(Window.HOURLY, now)
    buckets = {current + 1: 5, current: 1, current - 60: 2, current - 61: 100}
    assert windows.window_total(buckets, Window.HOURLY, now) == 8
    assert windows.stale_buckets(buckets, Window.HOURLY, now) == [current - 61]
