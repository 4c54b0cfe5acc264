"""Typed readers of the environment: the only place settings touch ``os.environ``.

Every reader takes the variable's full name. A malformed value raises
``ImproperlyConfigured`` at import time instead of surfacing later as odd behaviour.
``<NAME>_FILE`` may hold a path whose contents replace ``<NAME>`` (for secrets).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_MISSING = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc}") from exc
    return os.environ.get(name)


def env_str(name: str, default: object = _MISSING) -> str:
    value = _raw(name)
    if value is None:
        if default is _MISSING:
            raise ImproperlyConfigured(f"{name} must be set")
        return str(default)
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (true/false/1/0)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} must be at least {minimum}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} must be at least {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_origins(name: str) -> list[str]:
    """A comma-separated list of web origins (``scheme://host[:port]``, no path); empty if
    unset."""
    origins = env_list(name, [])
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or any(c in rest for c in "/?#*@ "):
            raise ImproperlyConfigured(
                f"{name}: {origin!r} is not an origin (scheme://host[:port], no path)"
            )
    return origins


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(name) or default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def parse_database_url(url: str) -> dict[str, object]:
    """Turn ``postgresql://user:pass@host:port/name`` into a Django DATABASES entry."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ImproperlyConfigured(f"database URL scheme {parts.scheme!r} is not PostgreSQL")
    name = parts.path.lstrip("/")
    if not name:
        raise ImproperlyConfigured("database URL has no database name")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(name),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def process_role(argv: list[str]) -> str:
    """What this process is, from its command line: ``web`` (daphne), ``worker`` (celery),
    the management command's name (``monitor``, ``migrate``, ...) or the program's name.
    Names the process's database connections (``application_name``) so that
    ``pg_stat_activity`` tells which process holds which connection."""
    if not argv:
        return "python"
    program = Path(argv[0])
    # ``python -m daphne`` runs .../daphne/__main__.py
    name = program.parent.name if program.name == "__main__.py" else program.stem
    if name == "daphne":
        return "web"
    if name == "celery":
        return "worker"
    if name == "manage" and len(argv) > 1 and not argv[1].startswith("-"):
        return argv[1]
    return name or "python"
