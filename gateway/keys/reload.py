"""Re-resolving the upstream keys at run time: `POST /admin/reload` and `SIGHUP`.

Keys are resolved once at start and again only here, never per request. Resolution may read
the OS keyring (a file, D-Bus), which is blocking I/O, so it runs in a worker thread; the pool
is then rebuilt on the event loop, where every other pool access happens. Reloads are
serialised, so two SIGHUPs in a row cannot interleave their results.

The SIGHUP handler is installed only when the loop runs in the main thread (where Python
delivers signals): `gateway serve`. Inside tests the gateway runs in a thread and the admin
endpoint is the way to reload.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence

from gateway.config.models import BackendConfig
from gateway.keys.pool import KeyPool
from gateway.keys.resolve import KeyResolution, resolve_backend_keys

log = logging.getLogger("gateway.keys")


def resolve_all(
    backends: Sequence[BackendConfig], env: Mapping[str, str]
) -> dict[str, KeyResolution]:
    return {b.name: resolve_backend_keys(b, env) for b in backends}


def warn_missing(resolutions: Mapping[str, KeyResolution]) -> None:
    for resolution in resolutions.values():
        for variable in resolution.missing:
            log.warning("backend %s: key variable %s is not set (env or keyring)",
                        resolution.backend, variable)
        if not resolution.keys and resolution.missing:
            log.warning("backend %s has no key: its models cannot be served", resolution.backend)


class KeyReloader:
    def __init__(
        self, backends: Sequence[BackendConfig], env: Mapping[str, str], pool: KeyPool
    ) -> None:
        self._backends = tuple(backends)
        self._env = env
        self._pool = pool
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def reload(self) -> dict[str, list[dict[str, object]]]:
        """Resolve every backend's keys again, rebuild the pool; returns the key status."""
        async with self._lock:
            resolutions = await asyncio.to_thread(resolve_all, self._backends, self._env)
            self._pool.load_resolutions(resolutions)
        warn_missing(resolutions)
        counts = ", ".join(f"{r.backend}={len(r.keys)}" for r in resolutions.values())
        log.info("upstream keys reloaded (%s)", counts or "no backends")
        return self._pool.status()

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Reload on SIGHUP; returns the uninstaller. A no-op off the main thread."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None or threading.current_thread() is not threading.main_thread():
            return lambda: None
        try:
            loop.add_signal_handler(sighup, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            return lambda: None

        def uninstall() -> None:
            loop.remove_signal_handler(sighup)

        return uninstall

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading upstream keys")
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.exception("key reload failed; the previous keys stay in use")
