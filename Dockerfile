# syntax=docker/dockerfile:1
# bulkconn as a container image: `docker build -t bulkconn:0.1.0 .` (see docs/scale-out.md).
# Two stages: the first builds wheels for bulkconn and its dependencies, the second installs them into
# a clean slim image that runs as an unprivileged user. No compiler, no pip cache, no source tree.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bulkconn ./bulkconn
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="bulkconn" \
      org.opencontainers.image.description="Fast, safe, resumable bulk changes to Microsoft Graph across many tenants" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BULKCONN_CONFIG=/config/bulkconn.toml
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and fsGroup can match it.
RUN groupadd --system --gid 10001 bulkconn \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/bulkconn --create-home \
       --shell /usr/sbin/nologin bulkconn
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels bulkconn
USER 10001:10001
WORKDIR /home/bulkconn
ENTRYPOINT ["bulkconn"]
CMD ["--help"]
