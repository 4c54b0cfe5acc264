"""The simulated accelerator: devices, their EPICS database and their import_pvs catalog.

``manage.py sim_ioc`` writes the database this module generates and serves it with the real
EPICS IOC core (the ``softioc`` package): loading one generated file serves 50K devices in a few
seconds, where building records one by one or a pure-Python server is far too slow.

Each device ``<prefix>:DEV<i>`` has a setpoint ``:SP`` and a readback ``:RBV``. The setpoint's
forward link processes the readback, so a put shows on the readback at once; readbacks of the
"changing" share are also scanned periodically and get fresh noise on every scan. The kind of a
device depends only on its index, so tests can predict it (``device_kind``).

Every record is served over pvAccess too (the IOC's QSRV); ``pva_records`` adds two PVs that only
pvAccess serves (QSRV groups): ``<prefix>:PVA:TABLE``, an NTTable of magnet names and strengths,
and ``<prefix>:PVA:MODE``, an NTEnum. ``catalog_write(pva_share=...)`` gives a share of the
devices ``pva://`` addresses.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

Kind = Literal["analog", "binary", "multi", "string", "readonly", "waveform"]

CSV_HEADER = (
    "Setpoint",
    "Readback",
    "Description",
    "Device",
    "AbsTolerance",
    "RelTolerance",
    "ReadOnly",
    "Area",
    "Subsystem",
)
BINARY_LABELS = ("OFF", "ON")
MULTI_LABELS = ("STANDBY", "RUNNING", "FAULT", "MAINTENANCE")
WAVEFORM_LENGTH = 1000
AREAS = ("LI20", "LI21", "LI22", "LI23", "LI24")
SUBSYSTEMS = ("Magnets", "Vacuum", "RF", "Diagnostics")
UNITS = ("A", "V", "mm", "Torr", "MW")
DRIVE_LIMIT = 100.0
NOISE = 0.01
# EPICS periodic scan rates (Hz) and the SCAN menu choice of each.
SCAN_CHOICES = {
    10.0: ".1 second",
    5.0: ".2 second",
    2.0: ".5 second",
    1.0: "1 second",
    0.5: "2 second",
    0.2: "5 second",
    0.1: "10 second",
}


def device_kind(index: int) -> Kind:
    """The kind of device ``index``: a pure function of the index, so tests can predict it."""
    if index % 1000 == 999:
        return "waveform"
    kinds: dict[int, Kind] = {1: "binary", 2: "multi", 3: "string", 4: "readonly", 5: "readonly"}
    return kinds.get(index % 20, "analog")


def has_drive_limits(index: int) -> bool:
    """Analog setpoints with DRVH/DRVL (+/- DRIVE_LIMIT): every fourth device."""
    return device_kind(index) == "analog" and index % 4 == 0


def base_value(index: int) -> float:
    """The initial value of an analog device (always inside the drive limits)."""
    return round((index % 97) * 0.5 + 1.0, 3)


def scan_for_rate(rate: float) -> str:
    """The SCAN menu choice closest (in log scale) to ``rate`` Hz."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError("rate must be a positive number of Hz")
    best = min(SCAN_CHOICES, key=lambda hz: abs(math.log(hz / rate)))
    return SCAN_CHOICES[best]


def _hash_fraction(index: int) -> float:
    """A well-spread deterministic number in [0, 1) for ``index`` (Knuth multiplicative hash)."""
    return ((index * 2654435761) & 0xFFFFFFFF) / 2**32


@dataclass(frozen=True, slots=True)
class Device:
    index: int
    prefix: str
    kind: Kind
    changing: bool

    @property
    def name(self) -> str:
        return f"{self.prefix}:DEV{self.index}"

    @property
    def setpoint(self) -> str | None:
        return None if self.kind == "readonly" else f"{self.name}:SP"

    @property
    def readback(self) -> str:
        return f"{self.name}:RBV"

    @property
    def channels(self) -> int:
        return 1 if self.kind == "readonly" else 2


def sim_devices(*, count: int, prefix: str, update_share: float = 0.1) -> list[Device]:
    """The ``count`` devices of the simulation.

    ``update_share`` is the share of all *channels* (setpoints and readbacks) that change
    periodically; the changing ones are analog and read-only readbacks, spread by a hash.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if not 0.0 <= update_share <= 1.0:
        raise ValueError("update_share must be between 0 and 1")
    kinds = [device_kind(i) for i in range(count)]
    candidates = sum(1 for kind in kinds if kind in ("analog", "readonly"))
    channels = sum(1 if kind == "readonly" else 2 for kind in kinds)
    share = min(1.0, update_share * channels / candidates) if candidates else 0.0
    return [
        Device(
            index=i,
            prefix=prefix,
            kind=kind,
            changing=kind in ("analog", "readonly") and _hash_fraction(i) < share,
        )
        for i, kind in enumerate(kinds)
    ]


def _record(rtype: str, name: str, fields: Iterable[tuple[str, object]]) -> str:
    body = "".join(f'  field({key}, "{value}")\n' for key, value in fields)
    return f'record({rtype}, "{name}") {{\n{body}}}\n'


def _waveform_values(index: int) -> str:
    values = ",".join(
        f"{math.sin(2 * math.pi * k / WAVEFORM_LENGTH) * (index % 10 + 1):.4f}"
        for k in range(WAVEFORM_LENGTH)
    )
    return f"[{values}]"


def _records(device: Device, scan: str) -> Iterator[str]:
    i, sp, rbv = device.index, device.setpoint, device.readback
    rbv_scan = scan if device.changing else "Passive"
    units, area = UNITS[i % len(UNITS)], AREAS[i % len(AREAS)]
    desc = f"Sim {device.kind} {i} {area}"
    if device.kind == "readonly":
        yield _record("calc", rbv, _readback_fields(desc, base_value(i), units, rbv_scan))
        return
    assert sp is not None  # every kind but readonly has a setpoint (Device.setpoint)
    if device.kind == "analog":
        sp_fields: list[tuple[str, object]] = [
            ("DESC", desc),
            ("VAL", base_value(i)),
            ("EGU", units),
            ("PREC", 3),
            ("HOPR", DRIVE_LIMIT),
            ("LOPR", -DRIVE_LIMIT),
            ("PINI", "YES"),
            ("FLNK", rbv),
        ]
        if has_drive_limits(i):
            sp_fields += [("DRVH", DRIVE_LIMIT), ("DRVL", -DRIVE_LIMIT)]
        yield _record("ao", sp, sp_fields)
        yield _record("calc", rbv, _readback_fields(desc, f"{sp} NPP", units, rbv_scan))
    elif device.kind == "binary":
        labels: list[tuple[str, object]] = [("ZNAM", BINARY_LABELS[0]), ("ONAM", BINARY_LABELS[1])]
        yield _record(
            "bo",
            sp,
            [("DESC", desc), ("VAL", i % 2), *labels, ("PINI", "YES"), ("FLNK", rbv)],
        )
        yield _record("bi", rbv, [("DESC", desc), ("INP", f"{sp} NPP"), *labels, ("PINI", "YES")])
    elif device.kind == "multi":
        labels = [
            (f"{pre}ST", label)
            for pre, label in zip(("ZR", "ON", "TW", "TH"), MULTI_LABELS, strict=True)
        ] + [(f"{pre}VL", n) for n, pre in enumerate(("ZR", "ON", "TW", "TH"))]
        yield _record(
            "mbbo",
            sp,
            [("DESC", desc), ("VAL", i % 4), *labels, ("PINI", "YES"), ("FLNK", rbv)],
        )
        yield _record("mbbi", rbv, [("DESC", desc), ("INP", f"{sp} NPP"), *labels, ("PINI", "YES")])
    elif device.kind == "string":
        yield _record(
            "stringout",
            sp,
            [("DESC", desc), ("VAL", f"mode-{i % 7}"), ("PINI", "YES"), ("FLNK", rbv)],
        )
        yield _record("stringin", rbv, [("DESC", desc), ("INP", f"{sp} NPP"), ("PINI", "YES")])
    else:  # waveform
        common = [("DESC", desc), ("FTVL", "DOUBLE"), ("NELM", WAVEFORM_LENGTH), ("EGU", units)]
        common.append(("PREC", 3))
        yield _record(
            "waveform",
            sp,
            [*common, ("INP", _waveform_values(i)), ("PINI", "YES"), ("FLNK", rbv)],
        )
        yield _record("waveform", rbv, [*common, ("INP", f"{sp} NPP"), ("PINI", "YES")])


def _readback_fields(desc: str, source: object, units: str, scan: str) -> list[tuple[str, object]]:
    return [
        ("DESC", desc),
        ("SCAN", scan),
        ("CALC", "A+(RNDM-0.5)*B"),
        ("INPA", source),
        ("INPB", NOISE),
        ("EGU", units),
        ("PREC", 3),
        ("HOPR", DRIVE_LIMIT),
        ("LOPR", -DRIVE_LIMIT),
        ("PINI", "YES"),
    ]


TABLE_NAMES = ("QF1", "QD1", "QF2")
TABLE_K = (1.5, -2.25, 3.0)
MODE_LABELS = ("LOCAL", "REMOTE", "AUTO")


def pva_table(prefix: str) -> str:
    return f"{prefix}:PVA:TABLE"


def pva_mode(prefix: str) -> str:
    return f"{prefix}:PVA:MODE"


def _strings(items: Iterable[str]) -> str:
    return "[" + ",".join(f'\\"{item}\\"' for item in items) + "]"


def pva_records(prefix: str) -> str:
    """The PVA-only normative types (module docstring): QSRV groups over plain records."""
    table, mode = pva_table(prefix), pva_mode(prefix)
    n = len(TABLE_NAMES)

    def group(name: str, field: str, order: int, nt: str = "") -> str:
        """One record's whole ``Q:group`` info (a record holds one info of a name)."""
        mapping = f'"+type": "plain", "+channel": "VAL", "+putorder": {order}, "+trigger": "*"'
        head = f'"+id": "epics:nt/{nt}:1.0", "": {{"+type": "meta", "+channel": "VAL"}}, '
        body = (head if nt else "") + f'"{field}": {{{mapping}}}'
        return f'  info(Q:group, {{"{name}": {{{body}}}}})\n}}\n'

    return (
        f'record(waveform, "{table}:LABELS") {{ field(FTVL, "STRING") field(NELM, "2")\n'
        f'  field(INP, "{_strings(("name", "k"))}") field(PINI, "YES")\n'
        + group(table, "labels", 0, "NTTable")
        + f'record(waveform, "{table}:NAME") {{ field(FTVL, "STRING") field(NELM, "{n}")\n'
        f'  field(INP, "{_strings(TABLE_NAMES)}") field(PINI, "YES")\n'
        + group(table, "value.name", 1)
        + f'record(waveform, "{table}:K") {{ field(FTVL, "DOUBLE") field(NELM, "{n}")\n'
        f'  field(INP, "[{",".join(map(str, TABLE_K))}]") field(PINI, "YES")\n'
        + group(table, "value.k", 2)
        + f'record(mbbo, "{mode}:IDX") {{ field(ZRST, "{MODE_LABELS[0]}")'
        f' field(ONST, "{MODE_LABELS[1]}") field(TWST, "{MODE_LABELS[2]}")'
        f' field(VAL, "2") field(PINI, "YES")\n'
        + group(mode, "value.index", 0, "NTEnum")
        + f'record(waveform, "{mode}:CHOICES") {{ field(FTVL, "STRING") field(NELM, "3")\n'
        f'  field(INP, "{_strings(MODE_LABELS)}") field(PINI, "YES")\n'
        + group(mode, "value.choices", 0)
    )


def database_write(*, devices: list[Device], rate: float, out: TextIO, prefix: str = "") -> int:
    """Write the EPICS database of ``devices`` to ``out`` (with the PVA-only records of
    ``prefix`` when given); the number of records written."""
    scan = scan_for_rate(rate)
    records = 0
    for device in devices:
        for text in _records(device, scan):
            out.write(text)
            records += 1
    if prefix:
        out.write(pva_records(prefix))
    return records


def is_pva(index: int, pva_share: float) -> bool:
    """Whether device ``index`` gets ``pva://`` addresses in the catalog (spread by a hash)."""
    return _hash_fraction(index * 7 + 3) < pva_share


def catalog_write(*, devices: list[Device], out: TextIO, pva_share: float = 0.0) -> int:
    """Write the import_pvs CSV catalog of ``devices`` to ``out``; the number of rows.
    A ``pva_share`` of the devices (``is_pva``) get ``pva://`` addresses."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for d in devices:
        numeric = d.kind in ("analog", "readonly")
        scheme = "pva://" if is_pva(d.index, pva_share) else ""
        writer.writerow(
            (
                scheme + d.setpoint if d.setpoint else "",
                scheme + d.readback,
                f"Simulated {d.kind} device {d.index}",
                d.name,
                "0.05" if numeric else "",
                "0.001" if numeric else "",
                "true" if d.kind == "readonly" else "false",
                AREAS[d.index % len(AREAS)],
                SUBSYSTEMS[d.index % len(SUBSYSTEMS)],
            )
        )
    return len(devices)


def catalog_save(*, devices: list[Device], path: Path, pva_share: float = 0.0) -> int:
    """Write the CSV catalog to ``path``."""
    with path.open("w", newline="") as out:
        return catalog_write(devices=devices, out=out, pva_share=pva_share)
