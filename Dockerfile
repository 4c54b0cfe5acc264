# One image for every role: web (daphne), monitor, worker, migrate, sim IOC.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=squirrel.settings \
    SQUIRREL_STATIC_ROOT=/app/staticfiles

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 squirrel

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
# collectstatic needs a key at build time only; the real one comes from the environment.
RUN SQUIRREL_SECRET_KEY=build-only python manage.py collectstatic --noinput -v 0 \
    && chown -R squirrel:squirrel /app

USER squirrel
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
# the WebSocket options: squirrel/limits.py (DAPHNE_OPTIONS)
CMD ["daphne", "-b", "0.0.0.0", "-p", "8080", "--websocket-max-message-size", "8388608", \
     "--websocket-max-frame-size", "8388608", "squirrel.asgi:application"]
