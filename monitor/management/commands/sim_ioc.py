"""``manage.py sim_ioc``: serve a simulated accelerator over Channel Access and pvAccess on
loopback.

Generates an EPICS database (monitor.sim), loads it into the real IOC core from the ``softioc``
package with its pvAccess server (pvxs QSRV: every record, plus the PVA-only NTTable and NTEnum
of ``monitor.sim.pva_records``), prints ``sim_ioc ready: N channels on port PORT pva PVAPORT``
and serves until SIGTERM/SIGINT. ``--pva-port`` sets both the PVA server (TCP) and search (UDP)
ports, so each test IOC has its own.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from monitor import sim

# Loopback defaults for the IOC's server side; an explicit environment wins.
_SERVER_ENV = {
    "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_CA_ADDR_LIST": "127.0.0.1",
    "EPICS_CA_AUTO_ADDR_LIST": "NO",
    "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_PVA_ADDR_LIST": "127.0.0.1",
    "EPICS_PVA_AUTO_ADDR_LIST": "NO",
}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Command(BaseCommand):
    help = "Serve a simulated accelerator (N devices = setpoint + readback) over Channel Access."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=100, help="number of devices")
        parser.add_argument("--prefix", default="SIM", help="PV name prefix")
        parser.add_argument(
            "--port", type=int, help="EPICS_CA_SERVER_PORT (default: environment or 5064)"
        )
        parser.add_argument(
            "--pva-port",
            type=int,
            help="EPICS_PVA_SERVER_PORT and _BROADCAST_PORT (default: environment or 5075)",
        )
        parser.add_argument(
            "--pva-share",
            type=float,
            default=0.0,
            help="share of the devices written with pva:// addresses by --write-csv (0..1)",
        )
        parser.add_argument(
            "--update-share",
            type=float,
            default=0.1,
            help="share of all channels that change periodically (0..1)",
        )
        parser.add_argument("--rate", type=float, default=1.0, help="update rate in Hz")
        parser.add_argument("--write-csv", type=Path, help="write the import_pvs CSV catalog")
        parser.add_argument(
            "--csv-only", action="store_true", help="write the CSV (--write-csv) and exit"
        )

    def handle(
        self, *args, count, prefix, port, pva_port, pva_share, update_share, rate, write_csv,
        csv_only, **kw
    ):  # fmt: skip
        if not 0.0 <= pva_share <= 1.0:
            raise CommandError("--pva-share must be between 0 and 1")
        if csv_only and write_csv is None:
            raise CommandError("--csv-only needs --write-csv FILE")
        if not prefix or any(c in prefix for c in ' "\\'):
            raise CommandError("--prefix must be non-empty without spaces, quotes or backslashes")
        try:
            devices = sim.sim_devices(count=count, prefix=prefix, update_share=update_share)
            sim.scan_for_rate(rate)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if write_csv is not None:
            sim.catalog_save(devices=devices, path=write_csv, pva_share=pva_share)
            self.stderr.write(f"sim_ioc: wrote {len(devices)} devices to {write_csv}")
        if csv_only:
            return
        self._serve(devices=devices, prefix=prefix, port=port, pva_port=pva_port, rate=rate)

    def _serve(
        self,
        *,
        devices: list[sim.Device],
        prefix: str,
        port: int | None,
        pva_port: int | None,
        rate: float,
    ) -> None:
        if port is not None:
            os.environ["EPICS_CA_SERVER_PORT"] = str(port)
        if pva_port is not None:
            os.environ["EPICS_PVA_SERVER_PORT"] = str(pva_port)
            os.environ["EPICS_PVA_BROADCAST_PORT"] = str(pva_port)
        port = int(os.environ.get("EPICS_CA_SERVER_PORT", "5064"))
        # The PVA server moves to a free port by itself when its default is taken; a port
        # that was asked for is checked like the CA port.
        asked = "EPICS_PVA_SERVER_PORT" in os.environ
        pva_port = int(os.environ.get("EPICS_PVA_SERVER_PORT", "5075"))
        for name, value in _SERVER_ENV.items():
            os.environ.setdefault(name, value)
        # The IOC core silently falls back to a random port when its port is taken: refuse.
        for taken in (port, pva_port) if asked else (port,):
            if not _port_free(taken):
                raise CommandError(f"TCP port {taken} is already in use")

        started = time.monotonic()
        from softioc import softioc  # the IOC core; heavy, so imported only when serving

        with tempfile.TemporaryDirectory(prefix="sim_ioc-") as tmp:
            path = Path(tmp) / "sim.db"
            with path.open("w") as out:
                channels = sim.database_write(devices=devices, rate=rate, out=out, prefix=prefix)
            softioc.dbLoadDatabase(str(path))
        loaded = time.monotonic()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        # No Python device records here, so record callbacks never need a dispatcher loop.
        softioc.iocInit(dispatcher=lambda func, *a: func(*a), enable_pva=True)
        now = time.monotonic()
        self.stderr.write(
            f"sim_ioc: {len(devices)} devices: database {loaded - started:.1f} s,"
            f" iocInit {now - loaded:.1f} s"
        )
        self.stdout.write(f"sim_ioc ready: {channels} channels on port {port} pva {pva_port}")
        self.stdout.flush()
        sys.stdout.flush()
        while not stop.wait(1.0):
            pass
        self.stderr.write("sim_ioc: stopping")
        sys.stderr.flush()
        softioc.safeEpicsExit(0)
