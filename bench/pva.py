"""Benchmark of pvAccess (issue 20) against the simulated IOC's QSRV; by hand, prints figures.

    SQUIRREL_DATABASE_URL=postgresql://root@127.0.0.1:5432/squirrel_pva \\
        .venv/bin/python bench/pva.py [--devices 26316] [--bare-only] [--bindings p4p,pvapy]

One sim IOC serves ~50K channels (``--devices`` setpoint+readback devices, 10 % of channels
changing at 1 Hz: ~5K updates/s) over CA and PVA. First the bare bindings
(``bench/pva_bare.py``, one process per figure, no Squirrel) as the floor:

  * subscribe all channels paced 500 per 100 ms: seconds until every first value; then CPU
    (% of one core) and RSS over 10 s of ~5K updates/s;
  * get of every channel; put with completion of the analog setpoints;
  * the types task (NTEnum, NTTable) as each binding gives them.

Then ours (unless ``--bare-only``): the monitor on a catalog of the same channels as
``pva://`` addresses (start -> every value in Redis, CPU and RSS at ~5K updates/s), our
direct read of every channel (``monitor.bridge``) and our put with completion of the same
setpoints. Redis keys use a private prefix and are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import Proc, free_port  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python")
PREFIX = "PB"


def pva_env(port: int, ca_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "SQUIRREL_SECRET_KEY": os.environ.get("SQUIRREL_SECRET_KEY", "bench-only"),
        "EPICS_CA_SERVER_PORT": str(ca_port),
        "EPICS_CA_REPEATER_PORT": str(free_port()),
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_SERVER_PORT": str(port),
        "EPICS_PVA_BROADCAST_PORT": str(port),
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
    }


def names_files(devices: int, tmp: Path) -> dict[str, Path]:
    """Every channel, the analog setpoints, and the typed PVs, one name a line."""
    from monitor import sim

    devs = sim.sim_devices(count=devices, prefix=PREFIX)
    channels = [n for d in devs for n in (d.setpoint, d.readback) if n]
    analog = [d.setpoint for d in devs if d.kind == "analog" and d.setpoint]
    typed = [sim.pva_table(PREFIX), sim.pva_mode(PREFIX)]
    typed += [d.setpoint for d in devs[:4] if d.setpoint]
    out = {}
    for key, names in (("all", channels), ("analog", analog), ("typed", typed)):
        out[key] = tmp / f"{key}.txt"
        out[key].write_text("\n".join(names) + "\n")
    return out


def bare(binding: str, task: str, names: Path, env: dict[str, str], *extra: str) -> dict:
    args = [PYTHON, str(ROOT / "bench" / "pva_bare.py"), binding, task, str(names), *extra]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"binding": binding, "task": task, "failed": done.stderr[-500:]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=26316)
    parser.add_argument("--bindings", default="p4p,pvapy")
    parser.add_argument("--bare-only", action="store_true")
    parser.add_argument("--ours-only", action="store_true")
    args = parser.parse_args()
    pva_port, ca_port = free_port(), free_port()
    env = pva_env(pva_port, ca_port)
    with tempfile.TemporaryDirectory(prefix="bench-pva-") as tmp_name:
        tmp = Path(tmp_name)
        files = names_files(args.devices, tmp)
        channels = len(files["all"].read_text().split())
        ioc = Proc(
            "sim_ioc",
            [PYTHON, "manage.py", "sim_ioc", "--count", str(args.devices), "--prefix", PREFIX,
             "--port", str(ca_port), "--pva-port", str(pva_port), "--update-share", "0.1",
             "--rate", "1"],
            env,
        )  # fmt: skip
        try:
            ioc.wait_for("sim_ioc ready", 180)
            print(f"sim IOC: {channels} channels over PVA (and CA), ~{channels // 10} updates/s")
            for binding in [] if args.ours_only else args.bindings.split(","):
                # pvapy makes a Channel (and threads) per name: 5000 at once ran ~10K threads
                # at a load average of 400 here, so it gets 500 at a time
                chunk = ["--chunk", "500" if binding == "pvapy" else "5000"]
                for task, names, extra in (
                    ("types", files["typed"], ["--timeout", "5"]),
                    ("subscribe", files["all"], ["--pace", "500", "--timeout", "90"]),
                    ("get", files["all"], ["--timeout", "10", *chunk]),
                    ("put", files["analog"], ["--timeout", "10", *chunk]),
                ):
                    print("bare", json.dumps(bare(binding, task, names, env, *extra)), flush=True)
            if not args.bare_only:
                from bench.pva_ours import ours  # noqa: PLC0415 (Django set up only here)

                ours(env=env, files=files, devices=args.devices, prefix=PREFIX)
        finally:
            ioc.stop()


if __name__ == "__main__":
    main()
