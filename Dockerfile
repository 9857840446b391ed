# syntax=docker/dockerfile:1
# Communication service worker image: the runtime only (no demo broker, no SMTP
# capture, no test tools), with the dependency versions CI tested.
# Build: docker build -t communication-service .
# Run:   docker run --env-file commsvc.env -v commsvc-data:/var/lib/commsvc communication-service worker
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt ./constraints.txt
COPY domain ./domain
COPY streams ./streams
COPY templates ./templates
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COMM_DATA_DIR=/var/lib/commsvc \
    COMM_WEB_PORT=6066
# A system user without a home or a login shell; it owns only the data directory.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin commsvc \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/commsvc
# The wheels are mounted, not copied, so they leave no layer behind.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
USER 10001:10001
WORKDIR /var/lib/commsvc
# The table's local state (RocksDB): each worker takes a slot directory of its own
# under COMM_DATA_DIR, so one volume may be shared by the workers of one host.
VOLUME ["/var/lib/commsvc"]
# Probes (/healthz, /readyz) and metrics (/metrics).
EXPOSE 6066
# Liveness: the worker's event loop answers. python:3.11-slim has no curl; any
# answer other than 2xx, or none within the timeout, makes urlopen raise.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COMM_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["commsvc"]
CMD ["worker"]
