"""The simulated OpenAI-compatible upstream (`gateway sim`), used by tests, benchmarks and the demo.

- options.py: `Faults`, `SimModel`, `SimOptions`; the command-line flags.
- app.py: `create_sim_app(options)`; endpoints.py, errors.py: the `/v1/*` endpoints.
- control.py: the `/_sim/*` control endpoints (script, faults, reset, request log, answers).
- text.py, answers.py, embeddings.py, wire.py, faults.py: pure answer, wire and fault logic.
- stream.py: writing responses with faults, noticing disconnects. state.py: per-app state.
- server.py: running under uvicorn. testing.py: `running_sim` for tests. demo.py: demo models.

Nothing here runs or allocates at import time.
"""
