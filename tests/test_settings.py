"""squirrel/settings.py as a deployment sees it: each case runs ``manage.py`` in a process of
its own, with the environment a deployment would give it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from tests.processes import ROOT

# What README "Security" tells production to set (behind a TLS-terminating reverse proxy).
PRODUCTION = {
    "SQUIRREL_DEBUG": "false",
    "SQUIRREL_SECRET_KEY": secrets.token_urlsafe(50),
    "SQUIRREL_ALLOWED_HOSTS": "squirrel.example.org",
    "SQUIRREL_SECURE_COOKIES": "true",
    "SQUIRREL_SSL_REDIRECT": "true",
    "SQUIRREL_PROXY_SSL_HEADER": "true",
    "SQUIRREL_HSTS_SECONDS": "31536000",
    "SQUIRREL_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SQUIRREL_HSTS_PRELOAD": "true",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SQUIRREL_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings():
    done = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_the_defaults_keep_plain_http_and_check_deploy_says_so():
    """The local demo serves http on loopback: nothing secure-only by default, and the
    deploy check names exactly what production must turn on."""
    done = manage("check", "--deploy", SQUIRREL_SECRET_KEY=PRODUCTION["SQUIRREL_SECRET_KEY"])
    found = {w for w in ("W004", "W008", "W012", "W016") if f"security.{w}" in done.stderr}
    assert found == {"W004", "W008", "W012", "W016"}, done.stderr
    assert "drf_spectacular" not in done.stderr


def _db_settings(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from django.conf import settings; d = settings.DATABASES['default']; "
        "print(d['CONN_MAX_AGE'], d['OPTIONS'].get('pool'), d['OPTIONS']['application_name'], "
        "sep='|')"
    )
    return manage("shell", "-c", code, SQUIRREL_SECRET_KEY="x", **env)


def test_database_pool_is_the_default_and_bounded():
    done = _db_settings()
    assert done.returncode == 0, done.stderr
    age, pool, name = done.stdout.strip().splitlines()[-1].split("|")
    assert age == "0"
    assert "'max_size': 10" in done.stdout and "'min_size': 1" in done.stdout, done.stdout
    assert name.startswith("squirrel-shell:")


def test_database_pool_size_and_persistent_connections_from_the_environment():
    done = _db_settings(SQUIRREL_DB_POOL_MAX_SIZE="3", SQUIRREL_DB_POOL_MIN_SIZE="0")
    assert "'max_size': 3" in done.stdout and "'min_size': 0" in done.stdout, done.stderr
    # persistent connections only without the pool (they pile up under daphne: README)
    done = _db_settings(SQUIRREL_DB_CONN_MAX_AGE="60")
    assert done.returncode != 0
    assert "SQUIRREL_DB_CONN_MAX_AGE needs SQUIRREL_DB_POOL_MAX_SIZE=0" in done.stderr
    done = _db_settings(SQUIRREL_DB_POOL_MAX_SIZE="0", SQUIRREL_DB_CONN_MAX_AGE="60")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].split("|")[:2] == ["60", "None"]
    done = _db_settings(SQUIRREL_DB_POOL_MAX_SIZE="2", SQUIRREL_DB_POOL_MIN_SIZE="4")
    assert done.returncode != 0
    assert "SQUIRREL_DB_POOL_MIN_SIZE=4 is above SQUIRREL_DB_POOL_MAX_SIZE=2" in done.stderr
