"""The StateStore contract, run against MemoryStore, RedisStore and ResilientStore alike."""

from __future__ import annotations

import asyncio

from gateway.store.base import SpendCheck, SpendTotals, Window
from tests.unit.store.store_support import Harness, eventually

T0 = 1_700_000_070.0  # 30 s into a minute, 14 min into an hour: mid-bucket on both grids
G, C = "global", "client:team-a"


def hourly(scope: str, limit: int) -> SpendCheck:
    return SpendCheck(scope, Window.HOURLY, limit)


def daily(scope: str, limit: int) -> SpendCheck:
    return SpendCheck(scope, Window.DAILY, limit)


# -- spend ----------------------------------------------------------------------------------


async def test_reserve_that_fits_adds_to_every_scope(harness: Harness) -> None:
    store = harness.store
    checks = (hourly(G, 1_000), daily(C, 500))
    assert await store.reserve_spend((G, C), checks, 300, T0) is None
    assert await store.spend_totals(G, T0) == SpendTotals(300, 300)
    assert await store.spend_totals(C, T0 + 1) == SpendTotals(300, 300)
    assert await store.spend_totals("client:other", T0) == SpendTotals(0, 0)


async def test_reserve_up_to_the_limit_exactly(harness: Harness) -> None:
    store = harness.store
    check = hourly(G, 1_000)
    assert await store.reserve_spend((G,), (check,), 1_000, T0) is None
    assert await store.reserve_spend((G,), (check,), 1, T0) == check
    assert await store.reserve_spend((G,), (check,), 0, T0) is None


async def test_refused_reservation_adds_nothing_and_names_the_first_failing_check(
    harness: Harness,
) -> None:
    store = harness.store
    checks = (hourly(G, 10_000), hourly(C, 500), daily(C, 400), daily(G, 1))
    failed = await store.reserve_spend((G, C), checks, 450, T0)
    assert failed == daily(C, 400)
    assert await store.spend_totals(G, T0) == SpendTotals(0, 0)
    assert await store.spend_totals(C, T0) == SpendTotals(0, 0)


async def test_each_window_is_checked_against_its_own_spend(harness: Harness) -> None:
    store = harness.store
    checks = (hourly(G, 1_000), daily(G, 1_500))
    assert await store.reserve_spend((G,), checks, 900, T0) is None
    assert await store.reserve_spend((G,), checks, 200, T0 + 60) == hourly(G, 1_000)
    later = T0 + 2 * 3600  # the hour rolled, the day did not
    assert await store.reserve_spend((G,), checks, 500, later) is None
    assert await store.reserve_spend((G,), checks, 200, later) == daily(G, 1_500)


async def test_racing_reservations_admit_exactly_the_budget(harness: Harness) -> None:
    store = harness.store
    checks = (hourly(G, 50_000), daily(C, 1_000_000))

    async def one(i: int) -> bool:
        return await store.reserve_spend((G, C), checks, 1_000, T0 + i * 0.01) is None

    admitted = await asyncio.gather(*(one(i) for i in range(200)))
    assert sum(admitted) == 50
    assert await store.spend_totals(G, T0 + 3) == SpendTotals(50_000, 50_000)
    assert await store.spend_totals(C, T0 + 3) == SpendTotals(50_000, 50_000)


async def test_adjust_settles_to_actual_and_refunds(harness: Harness) -> None:
    store = harness.store
    check = hourly(G, 1_000)
    assert await store.reserve_spend((G, C), (check,), 800, T0) is None
    await store.adjust_spend((G, C), -500, T0)  # actual cost 300
    assert await store.spend_totals(G, T0 + 5) == SpendTotals(300, 300)
    assert await store.reserve_spend((G,), (check,), 700, T0 + 5) is None
    await store.adjust_spend((G,), -700, T0 + 5)  # refund in full
    assert await store.spend_totals(G, T0 + 6) == SpendTotals(300, 300)
    assert await store.spend_totals(C, T0 + 6) == SpendTotals(300, 300)


async def test_adjust_lands_in_the_bucket_of_the_reservation(harness: Harness) -> None:
    store = harness.store
    await store.adjust_spend((G,), 400, T0)
    await store.adjust_spend((G,), -100, T0 + 0.5)
    # Made at T0 (not "now"), so it rolls out with T0's bucket.
    assert await store.spend_totals(G, T0 + 3600) == SpendTotals(300, 300)
    assert await store.spend_totals(G, T0 + 3600 + 60) == SpendTotals(0, 300)


async def test_hourly_window_rolls_never_early_at_most_one_bucket_late(harness: Harness) -> None:
    store = harness.store
    assert await store.reserve_spend((G,), (), 250, T0) is None
    for offset in (0, 1, 1800, 3599, 3600):  # within the hour: always counted
        assert (await store.spend_totals(G, T0 + offset)).hourly_micros == 250, offset
    assert (await store.spend_totals(G, T0 + 3600 + 60)).hourly_micros == 0
    assert (await store.spend_totals(G, T0 + 3600 + 60)).daily_micros == 250


async def test_daily_window_rolls_never_early_at_most_one_bucket_late(harness: Harness) -> None:
    store = harness.store
    assert await store.reserve_spend((G,), (), 250, T0) is None
    for offset in (3600, 12 * 3600, 86_400):
        assert (await store.spend_totals(G, T0 + offset)).daily_micros == 250, offset
    assert (await store.spend_totals(G, T0 + 86_400 + 3600)).daily_micros == 0


async def test_a_rolled_window_admits_again(harness: Harness) -> None:
    store = harness.store
    check = hourly(G, 1_000)
    assert await store.reserve_spend((G,), (check,), 1_000, T0) is None
    assert await store.reserve_spend((G,), (check,), 1, T0 + 1800) == check
    assert await store.reserve_spend((G,), (check,), 1_000, T0 + 3660) is None


# -- records --------------------------------------------------------------------------------


async def test_records_put_get_overwrite(harness: Harness) -> None:
    store = harness.store
    assert await store.get_record("breaker", "m1") is None
    await store.put_record("breaker", "m1", {"state": "open", "at": 1.5, "n": [1, 2]})
    await store.put_record("breaker", "m2", {"state": "closed"})
    await store.put_record("breaker", "m1", {"state": "half_open"})
    await store.put_record("other", "m1", {"x": None})
    assert await store.get_record("breaker", "m1") == {"state": "half_open"}
    assert await store.get_records("breaker") == {
        "m1": {"state": "half_open"},
        "m2": {"state": "closed"},
    }
    assert await store.get_records("nothing") == {}


async def test_records_come_back_as_copies(harness: Harness) -> None:
    store = harness.store
    value: dict[str, object] = {"list": [1]}
    await store.put_record("k", "a:b/c d", value)
    value["list"] = [2]
    got = await store.get_record("k", "a:b/c d")
    assert got == {"list": [1]}
    got["list"] = [3]
    assert await store.get_record("k", "a:b/c d") == {"list": [1]}


async def test_records_expire_after_their_ttl(harness: Harness) -> None:
    store = harness.store
    await store.put_record("cooldown", "short", {"until": 1}, ttl_secs=0.2)
    await store.put_record("cooldown", "long", {"until": 2}, ttl_secs=60)
    await store.put_record("cooldown", "forever", {"until": 3})
    assert await store.get_record("cooldown", "short") == {"until": 1}
    harness.let_pass(0.3)

    async def short_gone() -> bool:
        return await store.get_record("cooldown", "short") is None

    await eventually(short_gone, 3.0, "record expiry")
    assert await store.get_records("cooldown") == {"long": {"until": 2}, "forever": {"until": 3}}


async def test_rewriting_a_record_without_ttl_keeps_it(harness: Harness) -> None:
    store = harness.store
    await store.put_record("k", "n", {"v": 1}, ttl_secs=0.2)
    await store.put_record("k", "n", {"v": 2})
    harness.let_pass(0.3)
    await asyncio.sleep(0.3 if harness.clock is None else 0)  # Redis's TTL runs on real time
    assert await store.get_record("k", "n") == {"v": 2}
    assert await store.get_records("k") == {"n": {"v": 2}}


# -- counters -------------------------------------------------------------------------------


async def test_counters_sum_increments(harness: Harness) -> None:
    store = harness.store
    await store.add_counters("keys", "OPENAI_API_KEY", {"requests": 1, "tokens": 120})
    await store.add_counters("keys", "OPENAI_API_KEY", {"requests": 1, "failures": 1})
    await store.add_counters("keys", "K[1]", {"successes": 0.5})
    await store.add_counters("stats", "m|code", {"alpha": 2.5, "beta": -0.5})
    await asyncio.gather(
        *(store.add_counters("keys", "K[1]", {"successes": 0.5}) for _ in range(40))
    )
    assert await store.get_counters("keys") == {
        "OPENAI_API_KEY": {"requests": 2.0, "tokens": 120.0, "failures": 1.0},
        "K[1]": {"successes": 20.5},
    }
    assert await store.get_counters("stats") == {"m|code": {"alpha": 2.5, "beta": -0.5}}
    assert await store.get_counters("none") == {}


# -- claims ---------------------------------------------------------------------------------


async def test_claims_are_exclusive_and_released_by_the_holder_only(harness: Harness) -> None:
    store = harness.store
    assert await store.claim("probe:m1", "replica-a", 30) is True
    assert await store.claim("probe:m1", "replica-b", 30) is False
    assert await store.claim("probe:m1", "replica-a", 30) is True  # the holder keeps it
    assert await store.claim("probe:m2", "replica-b", 30) is True  # other names are free
    await store.release("probe:m1", "replica-b")  # not the holder: no effect
    assert await store.claim("probe:m1", "replica-b", 30) is False
    await store.release("probe:m1", "replica-a")
    assert await store.claim("probe:m1", "replica-b", 30) is True


async def test_racing_claims_have_one_winner(harness: Harness) -> None:
    store = harness.store
    won = await asyncio.gather(*(store.claim("probe", f"r{i}", 30) for i in range(50)))
    assert sum(won) == 1


async def test_claims_expire(harness: Harness) -> None:
    store = harness.store
    assert await store.claim("probe", "replica-a", 0.2) is True
    assert await store.claim("probe", "replica-b", 0.2) is False
    harness.let_pass(0.3)

    async def b_takes_it() -> bool:
        return await store.claim("probe", "replica-b", 30)

    await eventually(b_takes_it, 3.0, "claim expiry")
    assert await store.claim("probe", "replica-a", 30) is False


async def test_ping(harness: Harness) -> None:
    assert await harness.store.ping() is not harness.degraded
