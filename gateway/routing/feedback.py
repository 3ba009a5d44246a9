"""What the router remembers about served requests, so later evidence lands on the right model.

Responsibility: two bounded, clock-injected maps and the rules that turn them into statistics.
- `RequestLedger`: request id -> which client it was, which model served it, for which task, and
  which automatic evidence was recorded. `POST /v1/feedback` looks requests up here; an
  unknown, expired or foreign id is None (the caller answers 404).
- `RetryDetector`: (client, prompt fingerprint) -> the last request that served it. The same
  client sending the same prompt again within the window is a hint that the answer was bad:
  the caller records `retried` against the model that served the earlier one.

Rules (`apply_feedback`, `penalise_retry`):
- Explicit feedback replaces the request's automatic evidence: its provisional success and any
  `retried` penalty are taken back, so a score of 0.0 after a 200 is one failure.
- A request may be re-rated; the new score replaces the previous one (the client corrected
  itself; the latest word is the real thing), so rating twice never counts twice.
- A rated request is never penalised as retried: the client's own score already says how good
  it was. A request is penalised at most once, however often the prompt comes back.
Call `RetryDetector.check` once per successfully served request; a failed one has nothing to
judge, and its failure was recorded as a signal already.

Across replicas the caller keeps each entry in the shared store too (`to_dict`); a replica
that did not serve a request `adopt`s the store's record, and `merge_served` reconciles the
two views when both exist. Retry detection stays per replica (a retry that lands on another
replica is not seen): it is a hint, the explicit score is the real thing.

Invariants: each map holds at most `max_entries`, and nothing older than its age bound is ever
returned; eviction is oldest first and amortised O(1) per call. No clock is read here.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace

import orjson

from gateway.config.models import Task
from gateway.routing.stats import QualitySignal, StatsBook

# Memory must stay flat however long the gateway runs, and each entry costs ~135 bytes: the
# ledger keeps the last 10,000 served requests of this replica (with Redis, the store keeps
# every request for the age bound, so any replica can still take a late score), and retry
# detection only needs the prompts of the last few thousand requests.
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_RETRY_ENTRIES = 5_000
DEFAULT_MAX_AGE_SECS = 24 * 3600.0
DEFAULT_RETRY_WINDOW_SECS = 300.0


@dataclass(frozen=True, slots=True)
class ServedRequest:
    request_id: str
    client: str | None
    model: str
    task: Task
    success_recorded: bool
    at: float
    score: float | None = None
    retry_penalised: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-safe, for a shared store's records."""
        return {
            "request_id": self.request_id,
            "client": self.client,
            "model": self.model,
            "task": self.task.value,
            "success_recorded": self.success_recorded,
            "at": self.at,
            "score": self.score,
            "retry_penalised": self.retry_penalised,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ServedRequest:
        score = data.get("score")
        return cls(
            request_id=str(data["request_id"]),
            client=None if data.get("client") is None else str(data["client"]),
            model=str(data["model"]),
            task=Task(str(data["task"])),
            success_recorded=bool(data["success_recorded"]),
            at=float(data["at"]),  # type: ignore[arg-type]
            score=None if score is None else float(score),  # type: ignore[arg-type]
            retry_penalised=bool(data.get("retry_penalised", False)),
        )


@dataclass(frozen=True, slots=True)
class PriorAttempt:
    """The earlier request a retry points at."""

    request_id: str
    model: str
    task: Task
    at: float


class RequestLedger:
    """Bounded by count and age; insertion order is time order, so the oldest is first."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, max_age_secs: float = DEFAULT_MAX_AGE_SECS
    ) -> None:
        self._max_entries = max_entries
        self._max_age = max_age_secs
        self._served: OrderedDict[str, ServedRequest] = OrderedDict()

    def __len__(self) -> int:
        return len(self._served)

    def _expire(self, now: float) -> None:
        served, horizon = self._served, now - self._max_age
        while served:
            oldest = next(iter(served.values()))
            if oldest.at >= horizon and len(served) <= self._max_entries:
                break
            served.popitem(last=False)

    def remember(
        self,
        request_id: str,
        client: str | None,
        model: str,
        task: Task,
        success_recorded: bool,
        now: float,
    ) -> ServedRequest:
        """Note a served request; a reused id replaces the older entry (latest request wins)."""
        served = ServedRequest(request_id, client, model, task, success_recorded, now)
        self._served.pop(request_id, None)
        self._served[request_id] = served
        self._expire(now)
        return served

    def lookup(self, request_id: str, client: str | None, now: float) -> ServedRequest | None:
        """The request if `client` made it and it has not expired; None otherwise."""
        self._expire(now)
        served = self._served.get(request_id)
        if served is None or served.client != client or served.at < now - self._max_age:
            return None
        return served

    def adopt(self, served: ServedRequest, now: float) -> None:
        """Hold `served` as it is (a record another replica wrote, with its score and marks);
        it takes the place of a local entry with the same id. Ignored once past the age bound."""
        if served.at < now - self._max_age:
            return
        # Appended even when older than the newest entry: it may then outlive its age bound
        # in the map a little (expiry looks at the front only), but `lookup` checks the age
        # of what it returns, and the count bound holds regardless.
        self._served.pop(served.request_id, None)
        self._served[served.request_id] = served
        self._expire(now)

    def peek(self, request_id: str) -> ServedRequest | None:
        """The entry whoever made it (for the router's own bookkeeping, never for clients)."""
        return self._served.get(request_id)

    def mark_rated(self, request_id: str, score: float) -> ServedRequest | None:
        """Store the score; returns the entry as it was before, which says what to replace."""
        before = self._served.get(request_id)
        if before is not None:  # assignment to an existing key keeps its place in the order
            self._served[request_id] = replace(before, score=score)
        return before

    def mark_retried(self, request_id: str) -> ServedRequest | None:
        before = self._served.get(request_id)
        if before is not None:
            self._served[request_id] = replace(before, retry_penalised=True)
        return before


class RetryDetector:
    def __init__(
        self,
        window_secs: float = DEFAULT_RETRY_WINDOW_SECS,
        max_entries: int = DEFAULT_RETRY_ENTRIES,
    ) -> None:
        self._window = window_secs
        self._max_entries = max_entries
        self._last: OrderedDict[tuple[str | None, bytes], PriorAttempt] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def check(
        self,
        client: str | None,
        prompt_fingerprint: bytes,
        request_id: str,
        model: str,
        task: Task,
        now: float,
    ) -> PriorAttempt | None:
        """The earlier request of this client with this prompt within the window, if any (not
        this same request id); then remember this one as the latest for the prompt."""
        last = self._last
        horizon = now - self._window
        while last:
            oldest = next(iter(last.values()))
            if oldest.at >= horizon and len(last) < self._max_entries:
                break
            last.popitem(last=False)
        key = (client, prompt_fingerprint)
        earlier = last.pop(key, None)
        if self._window > 0:
            last[key] = PriorAttempt(request_id, model, task, now)
        if earlier is None or earlier.request_id == request_id or earlier.at < horizon:
            return None
        return earlier


def merge_served(local: ServedRequest | None, stored: ServedRequest | None) -> ServedRequest | None:
    """One view of a request from this replica's entry and the shared store's record.

    The store's score wins when it has one (a rating is written to the store before it is
    acknowledged, so the record holds the latest word, also one given on another replica);
    otherwise the local one (its record may still be queued). `retry_penalised` only ever
    turns on, so either side saying so counts. A later request that reused the id (`at`
    differs) replaces the older one outright."""
    if stored is None or local is None:
        return stored or local
    if local.at != stored.at:
        return local if local.at > stored.at else stored
    return replace(
        stored,
        score=local.score if stored.score is None else stored.score,
        retry_penalised=stored.retry_penalised or local.retry_penalised,
    )


def prompt_fingerprint(body: Mapping[str, object]) -> bytes:
    """16-byte hash of what the request asks (messages, prompt or input), not how (model, ...),
    so a retry through another alias or with another temperature still matches."""
    asked = body.get("messages")
    if asked is None:
        asked = body.get("prompt", body.get("input"))
    try:
        raw = orjson.dumps(asked)
    except TypeError:  # not JSON data (never from a parsed body); fall back to its repr
        raw = repr(asked).encode()
    return hashlib.blake2b(raw, digest_size=16).digest()


def apply_feedback(
    ledger: RequestLedger,
    book: StatsBook,
    request_id: str,
    client: str | None,
    score: float,
    now: float,
) -> ServedRequest | None:
    """Handle `POST /v1/feedback`: None means 404 (unknown, expired or another client's id).
    ValueError if `score` is outside 0..1 (the caller answers 400 before calling)."""
    if not 0.0 <= score <= 1.0:
        raise ValueError("score must be within 0..1")
    served = ledger.lookup(request_id, client, now)
    if served is None:
        return None
    ledger.mark_rated(request_id, score)
    first_rating = served.score is None
    book.feedback(
        served.model,
        served.task,
        score,
        replaces_success=first_rating and served.success_recorded,
        replaces_score=served.score,
        replaces_retry=first_rating and served.retry_penalised,
    )
    return served


def penalise_retry(ledger: RequestLedger, book: StatsBook, earlier: PriorAttempt) -> bool:
    """Record `retried` against the model that served `earlier`, unless the client rated that
    request or it was penalised already. True when a signal was recorded."""
    served = ledger.peek(earlier.request_id)
    if served is not None:
        if served.score is not None or served.retry_penalised:
            return False
        ledger.mark_retried(earlier.request_id)
    book.record(earlier.model, earlier.task, QualitySignal.RETRIED)
    return True
