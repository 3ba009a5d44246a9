"""Spend control: estimate, reserve before the upstream call, settle to the actual cost after.

Money is integer micro-dollars, rounded up so rounding never lets spend slip past a limit.
Scopes are "global" and "client:<name>". A request reserves its estimate against every
hourly and daily window that applies in one atomic store call (the store guarantees the
atomicity); per-request limits need no store. When no window limit applies the spend is only
recorded afterwards, off the request path, so such requests never wait on, or fail because
of, the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config.models import ClientConfig, GatewayConfig, ModelConfig, SpendLimits
from gateway.errors import SpendLimitExceeded, SpendStoreUnavailable
from gateway.store.base import SpendCheck, SpendTotals, StateStore, StoreUnavailable, Window
from gateway.store.writebehind import WriteBehind

GLOBAL = "global"


# Prices per million tokens are micro-dollars per token, so a product like 3 * 0.1 carries
# float noise (0.30000000000000004); without the slack, ceil would bill a whole extra micro.
_FLOAT_SLACK = 1e-6


def cost_micros(model: ModelConfig, prompt_tokens: int, completion_tokens: int) -> int:
    exact = prompt_tokens * model.input_per_mtok + completion_tokens * model.output_per_mtok
    return max(0, math.ceil(exact - _FLOAT_SLACK))


def to_micros(usd: float) -> int:
    return round(usd * 1_000_000)


def scope_label(scope: str) -> str:
    return "global" if scope == GLOBAL else f"client '{scope.removeprefix('client:')}'"


@dataclass(frozen=True, slots=True)
class _ScopePlan:
    scopes: tuple[str, ...]
    checks: tuple[SpendCheck, ...]
    per_request: tuple[tuple[str, int], ...]


@dataclass(slots=True)
class Reservation:
    scopes: tuple[str, ...]
    micros: int
    at: float
    reserved: bool
    settled: bool = False


class SpendGuard:
    def __init__(
        self,
        config: GatewayConfig,
        store: StateStore,
        writes: WriteBehind,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._writes = writes
        self._clock = clock
        self.default_output_tokens = config.spend.default_output_tokens
        self._global_limits: SpendLimits = config.spend
        self._plans = {c.name: _plan(config.spend, c) for c in config.auth.clients}
        self._open_plan = _plan(config.spend, None)

    def plan_for(self, client: ClientConfig | None) -> _ScopePlan:
        return self._open_plan if client is None else self._plans[client.name]

    def estimate(self, model: ModelConfig, prompt_tokens: int, max_output: int | None) -> int:
        output = self.default_output_tokens if max_output is None else max_output
        return cost_micros(model, prompt_tokens, output)

    def fits_per_request(self, client: ClientConfig | None, micros: int) -> bool:
        return all(micros <= limit for _, limit in self.plan_for(client).per_request)

    def check_per_request(self, client: ClientConfig | None, micros: int) -> None:
        for scope, limit in self.plan_for(client).per_request:
            if micros > limit:
                raise _exceeded("per_request", scope, limit)

    async def reserve(self, client: ClientConfig | None, micros: int) -> Reservation:
        plan = self.plan_for(client)
        self.check_per_request(client, micros)
        now = self._clock()
        if not plan.checks:
            return Reservation(plan.scopes, micros, now, reserved=False)
        try:
            failed = await self._store.reserve_spend(plan.scopes, plan.checks, micros, now)
        except StoreUnavailable:
            raise SpendStoreUnavailable(
                "spend limits cannot be checked: the state store is unreachable"
            ) from None
        if failed is not None:
            raise _exceeded(failed.window.value, failed.scope, failed.limit_micros)
        return Reservation(plan.scopes, micros, now, reserved=True)

    def settle(self, reservation: Reservation, actual_micros: int) -> None:
        """Replace the reservation by the actual cost (0 refunds it); runs exactly once."""
        if reservation.settled:
            return
        reservation.settled = True
        delta = actual_micros - reservation.micros if reservation.reserved else actual_micros
        if delta == 0:
            return
        scopes, at = reservation.scopes, reservation.at
        self._writes.submit(lambda: self._store.adjust_spend(scopes, delta, at))

    async def totals(self, scope: str) -> SpendTotals:
        return await self._store.spend_totals(scope, self._clock())

    def limits_of(self, client: ClientConfig | None) -> SpendLimits:
        return self._global_limits if client is None else client.spend


def _plan(global_limits: SpendLimits, client: ClientConfig | None) -> _ScopePlan:
    scoped: list[tuple[str, SpendLimits]] = [(GLOBAL, global_limits)]
    if client is not None:
        scoped.append((f"client:{client.name}", client.spend))
    checks: list[SpendCheck] = []
    per_request: list[tuple[str, int]] = []
    for scope, limits in scoped:
        if limits.per_request_usd is not None:
            per_request.append((scope, to_micros(limits.per_request_usd)))
        if limits.hourly_usd is not None:
            checks.append(SpendCheck(scope, Window.HOURLY, to_micros(limits.hourly_usd)))
        if limits.daily_usd is not None:
            checks.append(SpendCheck(scope, Window.DAILY, to_micros(limits.daily_usd)))
    return _ScopePlan(tuple(s for s, _ in scoped), tuple(checks), tuple(per_request))


def _exceeded(limit: str, scope: str, limit_micros: int) -> SpendLimitExceeded:
    return SpendLimitExceeded(
        f"{limit} spend limit of {scope_label(scope)} would be exceeded "
        f"(limit ${limit_micros / 1_000_000:.6f})"
    )
