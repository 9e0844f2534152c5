# The proxy alone (no Dovecot, no demo), as an unprivileged user.
#
#   docker build -t imapjmap .
#   docker run -p 8080:8080 \
#       -v "$PWD/config.toml:/etc/imapjmap/config.toml:ro" \
#       -v imapjmap-cache:/var/lib/imapjmap \
#       imapjmap
#
# The mounted config must listen on all interfaces inside the container and put the cache in
# the volume:
#   [server]  listen = "0.0.0.0:8080"   base_url = "https://jmap.example.com" (what clients use)
#   [cache]   path = "/var/lib/imapjmap/cache.sqlite3"
# (A relative cache path also lands in the volume: it is the working directory.)
# The image runs as uid 10001: a host folder bind-mounted at /var/lib/imapjmap instead of a
# named volume must be writable by that uid (chown 10001:10001 the folder).

FROM python:3.11-slim AS build
# a C compiler for the compiled parsing modules (python -m imapjmap.build_ext, mypyc from
# mypy): only in this stage; the image gets the installed project with them
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY imapjmap ./imapjmap
RUN python -m venv /opt/imapjmap \
    && /opt/imapjmap/bin/pip install --no-cache-dir . \
    && pip install --no-cache-dir --target /tmp/mypyc "mypy>=1.10" setuptools \
    && PYTHONPATH=/tmp/mypyc /opt/imapjmap/bin/python -m imapjmap.build_ext \
    && rm -rf /tmp/mypyc

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /opt/imapjmap /opt/imapjmap
COPY --from=build /src/LICENSE /usr/share/doc/imapjmap/LICENSE
ENV PATH=/opt/imapjmap/bin:$PATH
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/imapjmap \
        --no-create-home --shell /usr/sbin/nologin imapjmap \
    && mkdir -p /etc/imapjmap /var/lib/imapjmap \
    && chown imapjmap:imapjmap /var/lib/imapjmap
WORKDIR /var/lib/imapjmap
VOLUME ["/var/lib/imapjmap"]
USER imapjmap
EXPOSE 8080
# /healthz at the address the mounted configuration listens on (imapjmap health reads it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["imapjmap", "health", "--config", "/etc/imapjmap/config.toml"]
CMD ["imapjmap", "serve", "--config", "/etc/imapjmap/config.toml"]
