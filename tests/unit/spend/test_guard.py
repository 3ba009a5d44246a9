"""SpendGuard over a real MemoryStore: estimates, atomic reservations, settlement, messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config.models import (
    AuthConfig,
    ClientConfig,
    GatewayConfig,
    ModelConfig,
    SpendConfig,
    SpendLimits,
)
from gateway.errors import SpendLimitExceeded
from gateway.spend.guard import SpendGuard, cost_micros
from gateway.store.memory import MemoryStore
from gateway.store.writebehind import WriteBehind
from tests.unit.store.store_support import FakeClock

MODEL = ModelConfig(id="m", backend="b", input_per_mtok=1.0, output_per_mtok=2.0)
TEAM = ClientConfig(name="team-a", key_env="TEAM_A_KEY",
                    spend=SpendLimits(per_request_usd=0.001, hourly_usd=0.002))


def guard(
    spend: SpendConfig, clock: FakeClock, store: MemoryStore | None = None
) -> tuple[SpendGuard, MemoryStore, WriteBehind]:
    store = store or MemoryStore(None, 5.0, clock)
    writes = WriteBehind()
    config = GatewayConfig(spend=spend, auth=AuthConfig(clients=(TEAM,)))
    return SpendGuard(config, store, writes, clock), store, writes


def test_cost_is_integer_micros_rounded_up_without_float_noise() -> None:
    assert cost_micros(MODEL, 1_000_000, 0) == 1_000_000
    assert cost_micros(MODEL, 1, 1) == 3
    tenth = ModelConfig(id="t", backend="b", input_per_mtok=0.1, output_per_mtok=0.15)
    assert cost_micros(tenth, 30, 0) == 3  # 30 * 0.1 is 3.0000000000000004 in floats
    assert cost_micros(tenth, 0, 1) == 1  # a real fraction still rounds up


def test_estimate_uses_max_tokens_else_the_default() -> None:
    g, *_ = guard(SpendConfig(default_output_tokens=500), FakeClock())
    assert g.estimate(MODEL, 100, 10) == 100 + 20
    assert g.estimate(MODEL, 100, None) == 100 + 1000


async def test_per_request_limit_names_limit_and_scope() -> None:
    g, *_ = guard(SpendConfig(per_request_usd=0.0005), FakeClock())
    with pytest.raises(SpendLimitExceeded, match="per_request spend limit of global"):
        await g.reserve(None, 501)
    with pytest.raises(SpendLimitExceeded, match="per_request spend limit of global"):
        await g.reserve(TEAM, 600)
    g2, *_ = guard(SpendConfig(), FakeClock())
    with pytest.raises(SpendLimitExceeded, match="per_request spend limit of client 'team-a'"):
        await g2.reserve(TEAM, 1001)
    assert (await g2.reserve(TEAM, 1000)).reserved  # at the limit fits


async def test_concurrent_reservations_never_pass_the_hourly_limit() -> None:
    clock = FakeClock()
    g, store, _ = guard(SpendConfig(hourly_usd=0.001_000), clock)

    async def one() -> bool:
        try:
            await g.reserve(None, 30)
        except SpendLimitExceeded as exceeded:
            assert "hourly spend limit of global" in exceeded.message
            return False
        return True

    admitted = sum(await asyncio.gather(*(one() for _ in range(200))))
    assert admitted == 1000 // 30
    assert (await store.spend_totals("global", clock())).hourly_micros == 33 * 30


async def test_client_window_is_its_own_and_global_counts_every_client() -> None:
    clock = FakeClock()
    g, store, _ = guard(SpendConfig(daily_usd=1.0), clock)
    for _ in range(2):
        await g.reserve(TEAM, 1000)
    with pytest.raises(SpendLimitExceeded, match="hourly spend limit of client 'team-a'"):
        await g.reserve(TEAM, 1)
    await g.reserve(None, 5000)  # another (anonymous) caller is not bound by team-a's limit
    assert (await store.spend_totals("client:team-a", clock())).hourly_micros == 2000
    assert (await store.spend_totals("global", clock())).daily_micros == 7000


async def test_settle_replaces_the_estimate_and_refunds_exactly_once() -> None:
    clock = FakeClock()
    g, store, writes = guard(SpendConfig(hourly_usd=1.0), clock)
    served = await g.reserve(None, 500)
    failed = await g.reserve(None, 700)
    g.settle(served, 320)
    g.settle(failed, 0)
    g.settle(failed, 0)
    g.settle(served, 320)
    await writes.drain()
    assert (await store.spend_totals("global", clock())).hourly_micros == 320


async def test_spend_without_window_limits_is_recorded_after_the_call() -> None:
    clock = FakeClock()
    g, store, writes = guard(SpendConfig(), clock)
    reservation = await g.reserve(None, 10_000)
    assert not reservation.reserved
    assert (await store.spend_totals("global", clock())).hourly_micros == 0
    g.settle(reservation, 42)
    await writes.drain()
    assert (await store.spend_totals("global", clock())).hourly_micros == 42


async def test_the_hourly_window_survives_a_restart_and_then_rolls_off(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = MemoryStore(path, 5.0, clock)
    await store.start()
    g, _, writes = guard(SpendConfig(hourly_usd=0.0001), clock, store)
    g.settle(await g.reserve(None, 90), 90)
    await writes.drain()
    await store.close()

    reopened = MemoryStore(path, 5.0, clock)
    await reopened.start()
    g2, _, _ = guard(SpendConfig(hourly_usd=0.0001), clock, reopened)
    assert (await g2.totals("global")).hourly_micros == 90
    with pytest.raises(SpendLimitExceeded, match="hourly"):
        await g2.reserve(None, 11)
    clock.advance(3600 + 120)
    assert (await g2.reserve(None, 100)).reserved
    await reopened.close()
