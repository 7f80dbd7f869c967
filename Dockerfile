# polygon-sink: slim, multi-stage, non-root.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install '.[service]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /app sink
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HEALTH_PORT=8080 LOG_FORMAT=json
WORKDIR /app
USER sink
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTH_PORT','8080'), timeout=4)" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["polygon-sink"]
CMD ["run"]
