# Communication service worker image.
# Build: docker build -t communication-service .
# Run:   docker run --env-file commsvc.env communication-service worker
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY streams ./streams
COPY templates ./templates
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 commsvc
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER commsvc
WORKDIR /home/commsvc
# Faust keeps a small data directory (table metadata) in the working directory.
VOLUME ["/home/commsvc"]
ENTRYPOINT ["commsvc"]
CMD ["worker"]
