# The gateway image: `gateway serve` by default; the same image runs `gateway sim`.
#
# Two stages so the runtime image holds wheels only (no compiler, no build cache):
#   docker build -t llm-gateway .
#   docker run -p 8080:8080 -v $PWD/gateway.toml:/etc/gateway/gateway.toml:ro llm-gateway
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_CONFIG=/etc/gateway/gateway.toml \
    GATEWAY_SERVER__HOST=0.0.0.0 \
    GATEWAY_SERVER__PORT=8080
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels llm-gateway \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/gateway gateway
COPY deploy/gateway.toml /etc/gateway/gateway.toml
# The memory backend's state snapshot lives here (mount a volume to keep it across restarts).
WORKDIR /var/lib/gateway
USER gateway
EXPOSE 8080
# No curl in the slim image; the interpreter is there anyway.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_SERVER__PORT', '8080'), timeout=2)"]
# SIGTERM drains in-flight streams (server.drain_timeout_secs), saves state, exits 0.
STOPSIGNAL SIGTERM
CMD ["gateway", "serve"]
