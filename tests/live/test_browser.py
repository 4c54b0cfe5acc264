"""A real browser sees a live value change on the PV browser page (issue "Live values").

Real processes: the simulated IOC, the monitor, daphne; headless Debian Chromium driven by
Playwright. The value is changed with a direct Channel Access put to the IOC.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pvs.models import PV
from squirrel.limits import DAPHNE_OPTIONS
from tests.epics import epics_env, free_port, run_sim_ioc
from tests.processes import database_url

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [pytest.mark.browser, pytest.mark.epics, pytest.mark.django_db(transaction=True)]


@contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_pv_browser_shows_a_value_changed_on_the_ioc():
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        )
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")

    with run_sim_ioc(8, update_share=0.0) as ioc:
        for i in range(8):
            PV.objects.create(setpoint_address=ioc.setpoint(i), readback_address=ioc.readback(i),
                              description=f"browser test device {i}")  # fmt: skip
        env = {**os.environ, **epics_env(ioc.port), "SQUIRREL_DATABASE_URL": database_url(),
               "SQUIRREL_ANONYMOUS_ACCESS": "read"}  # fmt: skip
        port = free_port()
        monitor_cmd = [sys.executable, "manage.py", "monitor", "--max-seconds", "120"]
        web_cmd = [shutil.which("daphne", path=str(ROOT / ".venv/bin")) or "daphne",
                   "-b", "127.0.0.1", "-p", str(port), *DAPHNE_OPTIONS,
                   "squirrel.asgi:application"]  # fmt: skip
        with process(monitor_cmd, env), process(web_cmd, env):
            wait_port(port)
            target = ioc.setpoint(6)  # an analog device (sim.device_kind)
            with playwright_api.sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM,
                    headless=True,
                    args=[
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                    ],  # fmt: skip
                )
                try:
                    page = browser.new_page()
                    page.goto(f"http://127.0.0.1:{port}/live/pvs")
                    row = page.locator(f'tr[data-sp-addr="{target}"]')
                    try:
                        row.wait_for(timeout=15_000)
                    except playwright_api.TimeoutError:
                        page.screenshot(path="/tmp/squirrel-browser-test.png")
                        raise
                    cell = row.locator("td.live-sp")
                    # the monitor's first value arrives (initial or diff) ...
                    page.wait_for_function(
                        "(el) => el.textContent.trim() !== '—'",
                        arg=cell.element_handle(),
                        timeout=20_000,
                    )
                    # ... then a direct CA put on the IOC shows up on screen.
                    ioc.write(target, 42.125)
                    page.wait_for_function(
                        "(el) => el.textContent.includes('42.1')",
                        arg=cell.element_handle(),
                        timeout=10_000,
                    )
                    assert "42.1" in cell.text_content()
                    banner = page.locator("#monitor-banner").text_content()
                    assert "monitor live" in banner
                finally:
                    browser.close()
