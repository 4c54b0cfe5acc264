"""The shape of the code: apps depend one way (STYLE.md §2) and no module grows into a god module.

Reads the source with ``ast``, so a function-level import counts like any other. Management
commands and the composition root (``squirrel/urls.py``, ``asgi.py``, ``routing.py``,
``celery.py``, settings) may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The ladder, lowest first: an app may import only from apps before it (README "Apps").
LADDER = ["squirrel", "jobs", "tags", "pvs", "monitor", "snapshots", "live"]
SIDEWAYS_OK = {("jobs", "tags"), ("tags", "jobs")}  # same rung: neither imports the other today
COMPOSITION_ROOT = {
    Path("squirrel") / name
    for name in ("urls.py", "api_urls.py", "asgi.py", "wsgi.py", "routing.py", "celery.py",
                 "settings.py")
}  # fmt: skip
MAX_LINES = 600
LARGER = {Path("monitor") / "ca.py": 1100}  # one cohesive client (its classes belong together)


def _modules():
    for app in LADDER:
        for path in sorted((ROOT / app).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if {"migrations", "tests", "__pycache__"} & set(rel.parts):
                continue
            yield app, rel, path.read_text(encoding="utf-8")


def _imported_apps(source: str) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [(name.split(".")[0], node.lineno) for name in names]
    return found


def test_apps_import_only_from_below():
    rung = {app: index for index, app in enumerate(LADDER)}
    upward = []
    for app, rel, source in _modules():
        if "management" in rel.parts or rel in COMPOSITION_ROOT:
            continue
        for other, line in _imported_apps(source):
            sideways = (app, other) in SIDEWAYS_OK
            if other in rung and rung[other] > rung[app] and not sideways:
                upward.append(f"{rel}:{line} imports {other} (above {app})")
    assert not upward, "imports against the app ladder:\n" + "\n".join(upward)


def test_no_module_is_a_god_module():
    too_long = []
    for _, rel, source in _modules():
        limit = LARGER.get(rel, MAX_LINES)
        if source.count("\n") > limit:
            too_long.append(f"{rel}: {source.count(chr(10))} lines (limit {limit})")
    assert not too_long, "\n".join(too_long)


def test_the_checks_see_an_upward_import():
    """The checks are not vacuous: a lower app importing a higher one is caught."""
    assert _imported_apps("def f():\n    from snapshots.models import Snapshot\n") == [
        ("snapshots", 2)
    ]
    assert _imported_apps("import live.fanout\nfrom . import x\n") == [("live", 1)]
