"""pvAccess values as Entries (``monitor.pva``'s module docstring, 5): the binding's ``Value``
objects decoded by duck typing (item access by field path, ``getID``, ``todict``, ``tolist``),
so that ``monitor.pva`` stays the only module that imports the binding."""

from __future__ import annotations

from typing import Any

from monitor import values
from monitor.values import Entry

Value = Any  # p4p.Value, not imported here

_SCALAR_IDS = ("epics:nt/NTScalar:", "epics:nt/NTScalarArray:")
_ENUM_ID = "epics:nt/NTEnum:"
_TABLE_ID = "epics:nt/NTTable:"
_FIELD_TYPES = {
    "?": "bool", "b": "int8", "B": "uint8", "h": "int16", "H": "uint16", "i": "int32",
    "I": "uint32", "l": "int64", "L": "uint64", "f": "float32", "d": "float64", "s": "string",
}  # fmt: skip


def _plain(item: Any) -> Any:
    """A field's value as JSON-native Python (structures as dicts, arrays as lists)."""
    if hasattr(item, "todict"):  # a (sub-)structure
        item = item.todict()
    if isinstance(item, dict):
        return {key: _plain(x) for key, x in item.items()}
    if hasattr(item, "tolist"):
        return item.tolist()
    if isinstance(item, list | tuple):
        return [_plain(x) for x in item]
    return item


def kind_of(value: Value) -> str:
    """ "scalar", "enum", "table" or "struct", from the normative type id."""
    vid = value.getID()
    if vid.startswith(_SCALAR_IDS):
        return "scalar"
    if vid.startswith(_ENUM_ID):
        return "enum"
    if vid.startswith(_TABLE_ID):
        return "table"
    return "struct"


_DISPLAY = (("units", "display.units"), ("precision", "display.precision"))
_CONTROL = (("upper_ctrl_limit", "control.limitHigh"), ("lower_ctrl_limit", "control.limitLow"))


def meta_of(value: Value) -> dict[str, Any]:
    """Display and control metadata in CA's fields (units, precision, control limits)."""
    meta: dict[str, Any] = {}
    for key, field in _DISPLAY:
        try:
            meta[key] = value[field]
        except (KeyError, AttributeError):  # a field this PV does not have
            continue
    for key, field in _CONTROL:
        try:
            meta[key] = float(value[field])
        except (KeyError, AttributeError):  # a field this PV does not have
            continue
    if meta.get("upper_ctrl_limit") == meta.get("lower_ctrl_limit") == 0.0:
        meta["upper_ctrl_limit"] = meta["lower_ctrl_limit"] = None  # unset, as CA's 0/0
    return meta


def _table(value: Value) -> dict[str, Any]:
    columns = value["value"]
    names = list(columns.keys())
    types = {}
    for name, code in columns.type().aspy()[2]:
        types[name] = _FIELD_TYPES.get(code.lstrip("a"), code)
    try:
        labels = list(value["labels"]) or names
    except KeyError:
        labels = names
    return values.table_value(
        labels=labels, columns={n: _plain(columns[n]) for n in names}, types=types
    )


_STATUS_INDEX = {name: index for index, name in enumerate(values.ALARM_STATUS)}
_PLAIN = (float, int, str, bool)


def _alarm(value: Value) -> tuple[int | None, int | None]:
    """(CA alarm status, severity): the alarm message names the CA status (QSRV)."""
    try:
        severity, message = value["alarm.severity"], value["alarm.message"]
    except KeyError:
        return None, None
    status = _STATUS_INDEX.get(message)
    if status is not None:
        return status, severity
    return (0 if severity == 0 and not message else None), severity


def entry_of(value: Value, kind: str, meta: dict[str, Any] | None, now: float) -> Entry:
    """One update or read as an Entry (module docstring, 5)."""
    status, severity = _alarm(value)
    try:
        stamp = value["timeStamp.secondsPastEpoch"] + value["timeStamp.nanoseconds"] * 1e-9
    except KeyError:
        stamp = None
    entry: Entry = {
        "connected": True,
        "updated_at": now,
        "status": status,
        "severity": severity,
        "timestamp": stamp,
    }
    if meta:
        entry.update(meta)  # type: ignore[typeddict-item]
    if kind == "scalar":
        item = value["value"]
        entry["value"] = item if type(item) in _PLAIN else _plain(item)
    elif kind == "enum":
        choices = list(value["value.choices"])
        index = value["value.index"]
        entry["index"] = index
        entry["enum_strs"] = choices
        entry["value"] = choices[index] if 0 <= index < len(choices) else str(index)
    elif kind == "table":
        entry["value"] = _table(value)
        entry["structure"] = values.TABLE
    else:
        entry["value"] = {k: _plain(value[k]) for k in value.keys() if k != "record"}  # noqa: SIM118
        entry["structure"] = values.STRUCT
    return values.clean(entry)
