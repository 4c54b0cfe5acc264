"""Every command that starts daphne passes squirrel.limits.DAPHNE_OPTIONS (issue 15, item 8).

daphne's own WebSocket message limit (1 MiB) closes the socket of a client that subscribes to
50,000 names (SQUIRREL_WEBSOCKET_MAX_PVS_PER_MESSAGE) in one message, as the React frontend does
after a reconnect; test_ws.py shows that the options fix it, this test that no launcher lacks
them: the Makefile, the demo's Procfile, the image, compose, the benchmarks and the tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from squirrel.limits import DAPHNE_OPTIONS, WEBSOCKET_MAX_MESSAGE_BYTES
from tests.processes import ROOT

APP = "squirrel.asgi:application"
TEXT_LAUNCHERS = ["Makefile", "Procfile.demo", "Dockerfile", "docker-compose.yml"]


def logical_lines(text: str) -> list[str]:
    """Lines with comments dropped, ``\\`` continuations and open brackets joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = "" if raw.lstrip().startswith("#") else re.sub(r"\s+#.*$", "", raw)
        current += " " + line
        if line.rstrip().endswith("\\") or current.count("[") > current.count("]"):
            current = current.rstrip().rstrip("\\")
            continue
        lines.append(current.strip())
        current = ""
    return [*lines, current.strip()]


def option(tokens: list[str], name: str) -> int | None:
    return int(tokens[tokens.index(name) + 1]) if name in tokens else None


@pytest.mark.parametrize("name", TEXT_LAUNCHERS)
def test_text_launchers_pass_the_websocket_options(name):
    text = (ROOT / name).read_text()
    variables = dict(re.findall(r"^(\w+)\s*:?=\s*(.*)$", text, re.M)) if name == "Makefile" else {}
    commands = [line for line in logical_lines(text) if "daphne" in line and APP in line]
    assert commands, f"no daphne command in {name}"
    for command in commands:
        for variable, value in variables.items():
            command = command.replace(f"$({variable})", value)
        tokens = re.findall(r"[^\s\"',\[\]]+", command)
        for flag in ("--websocket-max-message-size", "--websocket-max-frame-size"):
            assert option(tokens, flag) == WEBSOCKET_MAX_MESSAGE_BYTES, (name, command)


def test_python_launchers_pass_the_websocket_options():
    """Every list that names the ASGI app also unpacks DAPHNE_OPTIONS (bench/common.py, which
    does not set Django up, writes them out: they must be the same)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or "migrations" in rel.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.List) and any(
                isinstance(e, ast.Constant) and e.value == APP for e in node.elts
            ):
                found.append(rel)
                assert any(
                    isinstance(e, ast.Starred) and getattr(e.value, "id", "") == "DAPHNE_OPTIONS"
                    for e in node.elts
                ), f"{rel}:{node.lineno} starts daphne without DAPHNE_OPTIONS"
    assert {Path("bench/common.py"), Path("tests/e2e/stack.py")} <= set(found), found
    bench = ast.parse((ROOT / "bench" / "common.py").read_text())
    (literal,) = [
        ast.literal_eval(n.value)
        for n in ast.walk(bench)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "DAPHNE_OPTIONS"
    ]
    assert literal == DAPHNE_OPTIONS
