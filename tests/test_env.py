"""squirrel/env.py: typed readers fail loudly on malformed values."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from squirrel import env


def test_bool_accepts_the_usual_spellings(monkeypatch):
    for raw, expected in [("true", True), ("1", True), ("ON", True), ("no", False), ("0", False)]:
        monkeypatch.setenv("SQ_TEST_BOOL", raw)
        assert env.env_bool("SQ_TEST_BOOL", not expected) is expected


def test_bool_default_when_unset_or_empty(monkeypatch):
    monkeypatch.delenv("SQ_TEST_BOOL", raising=False)
    assert env.env_bool("SQ_TEST_BOOL", True) is True
    monkeypatch.setenv("SQ_TEST_BOOL", "")
    assert env.env_bool("SQ_TEST_BOOL", False) is False


@pytest.mark.parametrize(
    ("reader", "raw"),
    [
        (lambda: env.env_bool("SQ_TEST_X", False), "maybe"),
        (lambda: env.env_int("SQ_TEST_X", 1), "1.5"),
        (lambda: env.env_float("SQ_TEST_X", 1.0), "fast"),
        (lambda: env.env_int("SQ_TEST_X", 1, minimum=2), "1"),
        (lambda: env.env_choice("SQ_TEST_X", "read", ("none", "read")), "admin"),
    ],
)
def test_malformed_values_raise(monkeypatch, reader, raw):
    monkeypatch.setenv("SQ_TEST_X", raw)
    with pytest.raises(ImproperlyConfigured, match="SQ_TEST_X"):
        reader()


def test_required_value_without_default_raises(monkeypatch):
    monkeypatch.delenv("SQ_TEST_REQUIRED", raising=False)
    with pytest.raises(ImproperlyConfigured, match="must be set"):
        env.env_str("SQ_TEST_REQUIRED")


def test_file_variant_wins(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("SQ_TEST_SECRET", "from-env")
    monkeypatch.setenv("SQ_TEST_SECRET_FILE", str(secret))
    assert env.env_str("SQ_TEST_SECRET") == "from-file"


def test_unreadable_file_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("SQ_TEST_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot read"):
        env.env_str("SQ_TEST_SECRET")


def test_list_and_database_url(monkeypatch):
    monkeypatch.setenv("SQ_TEST_LIST", "a, b,,c ")
    assert env.env_list("SQ_TEST_LIST", []) == ["a", "b", "c"]
    db = env.parse_database_url("postgresql://u:p%40ss@db.example:6543/squirrel")
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "u",
        "p@ss",
        "db.example",
        "6543",
        "squirrel",
    )
    with pytest.raises(ImproperlyConfigured):
        env.parse_database_url("mysql://x/y")
    with pytest.raises(ImproperlyConfigured):
        env.parse_database_url("postgresql://host/")


def test_process_role_names_each_kind_of_process():
    assert env.process_role(["/app/.venv/bin/daphne", "-b", "0.0.0.0"]) == "web"
    assert env.process_role(["/usr/lib/python3/site-packages/daphne/__main__.py"]) == "web"
    assert env.process_role(["/app/.venv/bin/celery", "-A", "squirrel", "worker"]) == "worker"
    assert env.process_role(["manage.py", "monitor", "--shards", "2"]) == "monitor"
    assert env.process_role(["./manage.py", "--help"]) == "manage"
    assert env.process_role(["/x/bin/pytest", "-q"]) == "pytest"
    assert env.process_role([]) == "python"
