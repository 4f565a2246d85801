# ern service image. Dependencies are installed before the code is copied so that code
# changes reuse the dependency layer; the service runs as an unprivileged user.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ERN_VAR_DIR=/var/lib/ern \
    ERN_GRAPH_DIR=/var/lib/ern/graphs \
    NUMBA_CACHE_DIR=/var/lib/ern/numba-cache

# libexpat/libgomp are needed by pyrosm and numba wheels at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libexpat1 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 ern \
    && mkdir -p /var/lib/ern && chown ern:ern /var/lib/ern

WORKDIR /app

# 1. dependencies only (metadata + empty packages), cached unless pyproject.toml changes
COPY pyproject.toml README.md ./
RUN mkdir -p api geo \
    && touch api/__init__.py geo/__init__.py \
    && pip install . \
    && pip uninstall -y ern

# 2. the code
COPY api ./api
COPY geo ./geo
RUN pip install --no-deps .

USER ern
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"

# Expects ERN_DATABASE_URL and ERN_SECRET_KEY (see compose.yaml); migrations run as
# `ern db upgrade` before the service starts.
CMD ["sh", "-c", "ern db upgrade && exec ern serve --host 0.0.0.0 --port 8000"]
