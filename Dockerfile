# polygon-sink: slim, multi-stage, non-root. ./scripts/image builds and checks it.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# The dependencies first, at the versions of constraints.txt (every one ships a manylinux
# wheel, so no compiler is needed): a change under src/ reuses this layer.
COPY pyproject.toml README.md constraints.txt ./
RUN mkdir src \
    && /opt/venv/bin/pip install -c constraints.txt '.[service]' \
    && /opt/venv/bin/pip uninstall -y polygon-sink
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/pip uninstall -y pip setuptools

FROM python:3.11-slim
RUN groupadd --gid 10001 sink \
    && useradd --uid 10001 --gid sink --no-create-home --home-dir /app --shell /usr/sbin/nologin sink
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HEALTH_PORT=8080 LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Exec form: python exits 1 when /healthz does not answer 200 within 4 s (unhealthy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTH_PORT', '8080'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["polygon-sink"]
CMD ["run"]
