"""Request ledger, retry detection and the rules that turn them into statistics."""

from __future__ import annotations

import pytest

from gateway.config.models import Task
from gateway.routing.feedback import (
    RequestLedger,
    RetryDetector,
    ServedRequest,
    apply_feedback,
    penalise_retry,
    prompt_fingerprint,
)
from gateway.routing.stats import QualitySignal, StatsBook

T = Task.GENERATE


def served_book(
    ledger: RequestLedger, request_id: str = "r1", client: str | None = "c"
) -> StatsBook:
    book = StatsBook(memory=None)
    book.record("m", T, QualitySignal.SUCCESS)
    ledger.remember(request_id, client, "m", T, success_recorded=True, now=100.0)
    return book


def test_lookup_only_for_the_same_client_and_not_after_expiry() -> None:
    ledger = RequestLedger(max_age_secs=60)
    ledger.remember("r1", "team-a", "m", T, success_recorded=True, now=0.0)
    assert ledger.lookup("r1", "team-a", now=30.0) is not None
    assert ledger.lookup("r1", "team-b", now=30.0) is None
    assert ledger.lookup("nope", "team-a", now=30.0) is None
    assert ledger.lookup("r1", "team-a", now=61.0) is None
    assert len(ledger) == 0


def test_ledger_is_bounded_oldest_first() -> None:
    ledger = RequestLedger(max_entries=3)
    for i in range(5):
        ledger.remember(f"r{i}", None, "m", T, success_recorded=True, now=float(i))
    assert len(ledger) == 3
    assert ledger.lookup("r1", None, now=5.0) is None
    assert ledger.lookup("r4", None, now=5.0) is not None


def test_rating_zero_after_a_success_counts_as_a_failure() -> None:
    ledger = RequestLedger()
    book = served_book(ledger)
    assert apply_feedback(ledger, book, "r1", "c", 0.0, now=101.0) is not None
    assert book.posterior("m", T) == (1.0, 2.0)


def test_rerating_replaces_the_previous_score() -> None:
    ledger = RequestLedger()
    book = served_book(ledger)
    apply_feedback(ledger, book, "r1", "c", 0.0, now=101.0)
    apply_feedback(ledger, book, "r1", "c", 1.0, now=102.0)
    apply_feedback(ledger, book, "r1", "c", 1.0, now=103.0)
    assert book.posterior("m", T) == (2.0, 1.0)  # one good answer, however often rated


def test_feedback_for_unknown_or_foreign_requests_changes_nothing() -> None:
    ledger = RequestLedger()
    book = served_book(ledger)
    assert apply_feedback(ledger, book, "r1", "someone-else", 0.0, now=101.0) is None
    assert apply_feedback(ledger, book, "r404", "c", 0.0, now=101.0) is None
    assert book.posterior("m", T) == (2.0, 1.0)
    with pytest.raises(ValueError):
        apply_feedback(ledger, book, "r1", "c", 2.0, now=101.0)


def test_retry_detection_within_the_window() -> None:
    detector = RetryDetector(window_secs=300)
    fp = prompt_fingerprint({"messages": [{"role": "user", "content": "hi"}]})
    assert detector.check("c", fp, "r1", "m1", T, now=0.0) is None
    earlier = detector.check("c", fp, "r2", "m2", T, now=10.0)
    assert earlier is not None and (earlier.request_id, earlier.model) == ("r1", "m1")
    # Another client, the same request id again, or past the window: not a retry.
    assert detector.check("other", fp, "r3", "m1", T, now=20.0) is None
    assert detector.check("c", fp, "r2", "m2", T, now=30.0) is None
    assert detector.check("c", fp, "r4", "m1", T, now=400.0) is None


def test_retry_detector_is_bounded_and_can_be_disabled() -> None:
    detector = RetryDetector(window_secs=300, max_entries=2)
    for i in range(5):
        detector.check("c", bytes([i]), f"r{i}", "m", T, now=float(i))
    assert len(detector) == 2
    off = RetryDetector(window_secs=0)
    off.check("c", b"x", "r1", "m", T, now=0.0)
    assert off.check("c", b"x", "r2", "m", T, now=0.0) is None


def test_retry_penalty_once_and_never_for_rated_requests() -> None:
    ledger = RequestLedger()
    book = served_book(ledger)
    detector = RetryDetector()
    detector.check("c", b"fp", "r1", "m", T, now=100.0)
    earlier = detector.check("c", b"fp", "r2", "m", T, now=110.0)
    assert earlier is not None
    assert penalise_retry(ledger, book, earlier)
    assert not penalise_retry(ledger, book, earlier)  # at most once per request
    assert book.posterior("m", T) == pytest.approx((2.0, 1.7))
    # A later score replaces both the provisional success and the retry penalty.
    apply_feedback(ledger, book, "r1", "c", 1.0, now=120.0)
    assert book.posterior("m", T) == pytest.approx((2.0, 1.0))
    rated = ledger.remember("r3", "c", "m", T, success_recorded=True, now=130.0)
    ledger.mark_rated(rated.request_id, 1.0)
    detector.check("c", b"fp2", "r3", "m", T, now=130.0)
    again = detector.check("c", b"fp2", "r4", "m", T, now=131.0)
    assert again is not None and not penalise_retry(ledger, book, again)


def test_fingerprint_is_about_what_is_asked() -> None:
    messages = [{"role": "user", "content": "Write a poem"}]
    a = prompt_fingerprint({"model": "auto", "messages": messages, "temperature": 0})
    b = prompt_fingerprint({"model": "auto:best", "messages": messages})
    c = prompt_fingerprint({"messages": [{"role": "user", "content": "Write a song"}]})
    assert a == b != c and len(a) == 16
    assert prompt_fingerprint({"prompt": "x"}) != prompt_fingerprint({"prompt": "y"})


def test_served_request_round_trips_through_a_record() -> None:
    served = ServedRequest("r1", None, "m", Task.CODE, True, 12.5, score=0.5)
    assert ServedRequest.from_dict(served.to_dict()) == served
