"""The one settings module. Environments differ only in ``SQUIRREL_*`` variables (env.py)."""

from __future__ import annotations

import os
import socket
import sys
import zlib
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from squirrel.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_origins,
    env_str,
    parse_database_url,
    process_role,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("SQUIRREL_DEBUG", False)
# Under pytest: a throwaway key, and a Redis prefix of this run's own (exported, so that the
# processes the tests start share it and no two runs on one Redis hear each other).
TESTING = "pytest" in sys.modules
if TESTING:
    os.environ.setdefault("SQUIRREL_REDIS_PREFIX", f"squirrel-test-{os.urandom(3).hex()}:")
    os.environ.setdefault("SQUIRREL_SECRET_KEY", f"test-only-{os.urandom(16).hex()}")
# Required in production; a development key is allowed only while DEBUG is on, or in tests.
SECRET_KEY = env_str(
    "SQUIRREL_SECRET_KEY",
    *(["insecure-development-key-do-not-use-in-production"] if DEBUG or TESTING else []),
)
ALLOWED_HOSTS = env_list(
    "SQUIRREL_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env_list("SQUIRREL_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "corsheaders",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    # the app ladder, lowest first (README "Apps"): each imports only from those above it here
    "squirrel",
    "jobs",
    "tags",
    "pvs",
    "monitor",
    "snapshots",
    "live",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "squirrel.middleware.AsyncStreamingMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "squirrel.urls"
ASGI_APPLICATION = "squirrel.asgi.application"
WSGI_APPLICATION = None
# Contract §1.2: collection routes have no trailing slash and must never be redirected.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# Under ASGI each request runs its sync code on a thread of its own, and a persistent connection
# (CONN_MAX_AGE > 0) stays with that thread until the garbage collector happens to free it: 20
# concurrent readers held 99 of PostgreSQL's 100 connections and never gave them back. So every
# process takes its connections from a psycopg pool of at most SQUIRREL_DB_POOL_MAX_SIZE, and each
# request (task, monitor read) hands its connection back when it ends; a request that finds the
# pool empty waits up to SQUIRREL_DB_POOL_TIMEOUT seconds, then answers 503. Measured with
# bench/load.py (README "Security"). SQUIRREL_DB_POOL_MAX_SIZE=0 turns the pool off: then one
# connection per request (CONN_MAX_AGE 0), unbounded under concurrency.
DB_POOL_MAX_SIZE = env_int("SQUIRREL_DB_POOL_MAX_SIZE", 10, minimum=0)
DB_POOL_MIN_SIZE = env_int("SQUIRREL_DB_POOL_MIN_SIZE", 1, minimum=0)
DB_POOL_TIMEOUT = env_float("SQUIRREL_DB_POOL_TIMEOUT", 10.0, minimum=0.1)
if DB_POOL_MIN_SIZE > DB_POOL_MAX_SIZE > 0:
    raise ImproperlyConfigured(
        f"SQUIRREL_DB_POOL_MIN_SIZE={DB_POOL_MIN_SIZE} is above "
        f"SQUIRREL_DB_POOL_MAX_SIZE={DB_POOL_MAX_SIZE}"
    )
_conn_max_age = env_int("SQUIRREL_DB_CONN_MAX_AGE", 0, minimum=0)
if _conn_max_age and DB_POOL_MAX_SIZE:
    raise ImproperlyConfigured(
        "SQUIRREL_DB_CONN_MAX_AGE needs SQUIRREL_DB_POOL_MAX_SIZE=0 (the pool already reuses "
        "connections; and under daphne persistent connections pile up, one per thread)"
    )
# Who holds a connection, in pg_stat_activity: "squirrel-web:<pid>@<host>" for daphne,
# -worker for celery, -monitor, -migrate, ... (the pid that loaded the settings).
DB_APPLICATION_NAME = env_str(
    "SQUIRREL_DB_APPLICATION_NAME",
    f"squirrel-{process_role(sys.argv)}:{os.getpid()}@{socket.gethostname()}",
)[:63]  # PostgreSQL keeps 63 bytes
DATABASES = {
    "default": {
        **parse_database_url(
            env_str("SQUIRREL_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/squirrel")
        ),
        "CONN_MAX_AGE": _conn_max_age,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "connect_timeout": env_int("SQUIRREL_DB_CONNECT_TIMEOUT", 5, minimum=1),
            "application_name": DB_APPLICATION_NAME,
            # JIT compilation added ~1 s to the 50K-row snapshot read and helps no query here.
            "options": "-c jit=off",
            **(
                {
                    "pool": {
                        "min_size": DB_POOL_MIN_SIZE,
                        "max_size": DB_POOL_MAX_SIZE,
                        "timeout": DB_POOL_TIMEOUT,
                        "name": DB_APPLICATION_NAME,
                    }
                }
                if DB_POOL_MAX_SIZE
                else {}
            ),
        },
    }
}
if TESTING:
    # pytest-django's database is named per checkout (CI's clone, a second worktree), so two
    # checkouts' runs on one server never drop each other's test database; a rerun in the same
    # checkout reuses (and recreates) its own.
    DATABASES["default"]["TEST"] = {
        "NAME": f"test_{DATABASES['default']['NAME']}_{zlib.crc32(str(BASE_DIR).encode()):08x}"
    }
# --- Deployment security (README "Security") ------------------------------------------------
# Off by default, so that the local demo keeps working over plain http on loopback. Production
# serves Squirrel over TLS behind a reverse proxy (deploy/nginx.conf.template) and turns these on;
# `manage.py check --deploy` is then clean (tests/test_settings.py).
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SQUIRREL_SECURE_COOKIES", False)
SECURE_SSL_REDIRECT = env_bool("SQUIRREL_SSL_REDIRECT", False)
# The container health check asks daphne directly, over http, from inside.
SECURE_REDIRECT_EXEMPT = [r"^health$"]
SECURE_HSTS_SECONDS = env_int("SQUIRREL_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SQUIRREL_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SQUIRREL_HSTS_PRELOAD", False)
# Only behind a proxy that sets X-Forwarded-Proto itself (and drops the client's): otherwise any
# client could claim https.
if env_bool("SQUIRREL_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("SQUIRREL_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# The web process serves its own static files (admin, Swagger UI, live pages): no extra server.
WHITENOISE_USE_FINDERS = True

# --- Redis: cache of live values, pub/sub, Celery broker, leader lock ----------------------
REDIS_URL = env_str("SQUIRREL_REDIS_URL", "redis://127.0.0.1:6379/0")
# Every key and pub/sub channel name starts with this (pub/sub ignores database numbers).
REDIS_PREFIX = env_str("SQUIRREL_REDIS_PREFIX", "squirrel:")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_PREFIX}asgi"},
    }
}

# The frontend's CSV import posts the whole catalog (50K PVs, ~10 MB of JSON) in one request.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("SQUIRREL_MAX_BODY_MB", 64, minimum=1) * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = None

# --- API ---------------------------------------------------------------------------------------
API_ENVELOPE = env_bool("SQUIRREL_API_ENVELOPE", True)
ANONYMOUS_ACCESS = env_choice(
    "SQUIRREL_ANONYMOUS_ACCESS", "read", ("none", "read", "write", "restore")
)
INSTANCE_ID = env_str("SQUIRREL_INSTANCE_ID", "") or os.urandom(4).hex()

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["squirrel.api.EnvelopeJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["squirrel.api.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "squirrel.auth.ApiKeyAuthentication",
        "squirrel.auth.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["squirrel.auth.ScopePermission"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "squirrel.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Squirrel API",
    "DESCRIPTION": (
        "Save, compare and restore the state of an EPICS control system. Every /v1 body is "
        "wrapped in the envelope {errorCode, errorMessage, payload} unless "
        "SQUIRREL_API_ENVELOPE=false."
    ),
    "VERSION": "0.2.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # two models' "kind" choices; named here, not by a hash (and `check --deploy` stays quiet)
    "ENUM_NAME_OVERRIDES": {
        "SnapshotKindEnum": "snapshots.models.Snapshot.Kind",
        "RestoreKindEnum": "snapshots.models.Restore.Kind",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "squirrel.api.envelope_schema_hook",
    ],
}

# CORS (issue 15; the contract's §1.4 said every origin, with credentials): only /v1/, only the
# origins listed, and never with credentials -- the React frontend sends no cookies, and a staff
# session must not be usable from another site's page. Default: same-origin only (the frontend's
# dev server proxies /v1); set e.g. http://localhost:5173 to call the API from it directly.
CORS_ALLOWED_ORIGINS = env_origins("SQUIRREL_CORS_ORIGINS")
CORS_URLS_REGEX = r"^/v1/"
CORS_ALLOW_CREDENTIALS = False
# django-cors-headers' defaults, and the API key header
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "user-agent", "x-csrftoken",
                      "x-requested-with", "x-api-key")  # fmt: skip

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("SQUIRREL_CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = f"{REDIS_PREFIX}celery"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("SQUIRREL_CELERY_VISIBILITY_TIMEOUT", 300, minimum=10),
    "global_keyprefix": REDIS_PREFIX,
    # A dead worker's unacknowledged job is redelivered soon after the visibility timeout.
    "unacked_restore_interval": 2,
    "unacked_restore_throttle": 1,
}
CELERY_TASK_TIME_LIMIT = env_int("SQUIRREL_TASK_TIME_LIMIT", 600, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("SQUIRREL_TASK_SOFT_TIME_LIMIT", 540, minimum=5)
# `celery -A squirrel beat` reads its schedule from the database (django-celery-beat): snapshot
# schedules (snapshots.schedules) and the retention sweep below, editable in the admin.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
DJANGO_CELERY_BEAT_TZ_AWARE = True
RETENTION_SWEEP_SECONDS = env_int("SQUIRREL_RETENTION_SWEEP_SECONDS", 3600, minimum=10)
CELERY_BEAT_SCHEDULE = {
    "snapshot-retention-sweep": {
        "task": "snapshots.tasks.retention_sweep_task",
        "schedule": float(RETENTION_SWEEP_SECONDS),
        "options": {"expires": float(RETENTION_SWEEP_SECONDS)},
    },
}

# --- EPICS and the monitor --------------------------------------------------------------------
EPICS_CONNECT_TIMEOUT = env_float("SQUIRREL_EPICS_CONNECT_TIMEOUT", 2.0, minimum=0.05)
EPICS_TIMEOUT = env_float("SQUIRREL_EPICS_TIMEOUT", 5.0, minimum=0.05)
EPICS_CONCURRENCY = env_int("SQUIRREL_EPICS_CONCURRENCY", 5000, minimum=1)
# Bare names that no Channel Access server answers are tried over pvAccess (monitor.bridge).
EPICS_UNPREFIXED_PVA_FALLBACK = env_bool("SQUIRREL_EPICS_UNPREFIXED_PVA_FALLBACK", False)
# Per-IOC circuit breaker (monitor/circuits.py): open after this many consecutive failed calls,
# one trial call after the cool-down.
CIRCUIT_THRESHOLD = env_int("SQUIRREL_CIRCUIT_THRESHOLD", 5, minimum=1)
CIRCUIT_COOL_DOWN = env_float("SQUIRREL_CIRCUIT_COOL_DOWN", 30.0, minimum=0.1)
MONITOR_FLUSH_INTERVAL = env_float("SQUIRREL_MONITOR_FLUSH_INTERVAL", 0.1, minimum=0.01)
MONITOR_HEARTBEAT_INTERVAL = env_float("SQUIRREL_MONITOR_HEARTBEAT_INTERVAL", 1.0, minimum=0.1)
MONITOR_LOCK_TTL = env_float("SQUIRREL_MONITOR_LOCK_TTL", 6.0, minimum=1.0)
MONITOR_CATALOG_POLL = env_float("SQUIRREL_MONITOR_CATALOG_POLL", 2.0, minimum=0.1)
MONITOR_ALIVE_SECONDS = env_float("SQUIRREL_MONITOR_ALIVE_SECONDS", 5.0, minimum=0.5)

# --- Snapshots, restore, live values -------------------------------------------------------------
# Context PVs read and stored with every snapshot (the admin's meta-PVs add to them).
SNAPSHOT_META_PVS = env_list("SQUIRREL_SNAPSHOT_META_PVS", [])
PLAN_MAX_AGE = env_float("SQUIRREL_PLAN_MAX_AGE", 300.0, minimum=1.0)
RESTORE_SETTLE_TIME = env_float("SQUIRREL_RESTORE_SETTLE_TIME", 2.0, minimum=0.0)
# A running capture or restore whose worker's heartbeat (one a second, jobs/heartbeat.py) is
# older than this lost its worker and is failed. SQUIRREL_RESTORE_HEARTBEAT_STALE: former name.
JOB_HEARTBEAT_STALE = env_float(
    "SQUIRREL_JOB_HEARTBEAT_STALE",
    env_float("SQUIRREL_RESTORE_HEARTBEAT_STALE", 15.0, minimum=2.0),
    minimum=2.0,
)
WEBSOCKET_BATCH_INTERVAL_MS = env_int("SQUIRREL_WEBSOCKET_BATCH_INTERVAL_MS", 100, minimum=10)
WEBSOCKET_HEARTBEAT_INTERVAL = env_float("SQUIRREL_WEBSOCKET_HEARTBEAT_INTERVAL", 5.0, minimum=0.5)
WEBSOCKET_MAX_PVS_PER_MESSAGE = env_int("SQUIRREL_WEBSOCKET_MAX_PVS_PER_MESSAGE", 50000, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("SQUIRREL_LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
