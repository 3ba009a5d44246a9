"""Typed access to the app's long-lived objects from a request."""

from __future__ import annotations

from starlette.requests import Request

from gateway.state import AppState


def gateway_state(request: Request) -> AppState:
    state: AppState = request.app.state.gateway
    return state
