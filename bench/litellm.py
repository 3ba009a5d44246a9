"""LiteLLM's proxy as a comparison target, in its own venv (bench/.venv-litellm, not committed).

`ensure_venv` creates the venv and pip-installs `litellm[proxy]` on first use; `start` runs
the proxy against the benchmark's upstream with one worker, pinned like the gateway, with a
master key (client auth on, as on the gateway) and no database. Any failure to install or
start returns a one-line reason instead of raising, so the benchmark goes on without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import procs

VENV = Path(__file__).resolve().parent / ".venv-litellm"
MASTER_KEY = "sk-bench-litellm-master"
MODEL = "bench-a"


def ensure_venv() -> Path | str:
    """The venv's `litellm` executable, or why it could not be installed."""
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True,
                       capture_output=True, timeout=300)
        done = subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
            capture_output=True, text=True, timeout=1800,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"could not create {VENV}: {error}"
    if done.returncode != 0 or not exe.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return f"pip install litellm[proxy] failed: {tail[0]}"
    return exe


def _config(folder: Path, upstream_port: int) -> Path:
    path = folder / "litellm.yaml"
    path.write_text(f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-bench-upstream-1
general_settings:
  master_key: {MASTER_KEY}
litellm_settings:
  drop_params: true
""")
    return path


def start(upstream: procs.Service, cpus: set[int], folder: Path) -> procs.Service | str:
    exe = ensure_venv()
    if isinstance(exe, str):
        return exe
    port = procs.free_port()
    argv = [str(exe), "--config", str(_config(folder, upstream.port)), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]
    env = {"PATH": f"{VENV / 'bin'}:/usr/bin:/bin", "HOME": str(folder),
           "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    service = procs.start("litellm", argv, port, cpus, folder, env=env)
    try:
        procs.wait_http(service, "/health/liveliness", timeout=180)
    except RuntimeError as error:
        service.stop()
        return str(error).splitlines()[0]
    return service
