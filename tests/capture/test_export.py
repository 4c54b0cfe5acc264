"""Export (API and ``manage.py export_snapshot``): CSV and JSON round trips."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid

import pytest
from django.core.management import CommandError, call_command

from monitor import events, values
from pvs.models import PV
from snapshots import capture, export
from tests.conftest import error

pytestmark = [pytest.mark.django_db]

TS = 1_769_555_000.25


@pytest.fixture
def snapshot(db, redis_client, monitor_heartbeat):
    PV.objects.create(setpoint_address="X:A:SP", readback_address="X:A:RBV")
    PV.objects.create(setpoint_address="X:ENUM:SP")
    PV.objects.create(setpoint_address="X:STR:SP")
    PV.objects.create(setpoint_address="X:WAVE:SP")
    PV.objects.create(setpoint_address="X:NAN:SP")
    PV.objects.create(readback_address="X:RO:RBV")
    now = time.time()
    base = {"connected": True, "updated_at": now, "status": 0, "severity": 0, "timestamp": TS}
    entries = {
        "X:A:SP": {**base, "value": 1.25, "units": "mA", "precision": 2,
                   "upper_ctrl_limit": 10.0, "lower_ctrl_limit": -10.0},
        "X:A:RBV": {**base, "value": 1.5, "status": 3, "severity": 1},
        "X:ENUM:SP": {**base, "value": "FAULT", "index": 2,
                      "enum_strs": ["STANDBY", "RUNNING", "FAULT"]},
        "X:STR:SP": {**base, "value": 'a "quoted", string'},
        "X:WAVE:SP": {**base, "value": [0.5, 1.5, -2.0]},
        "X:NAN:SP": {**base, "value": float("nan")},
        "X:RO:RBV": {**base, "value": 42},
    }  # fmt: skip
    redis_client.hset(events.values_hash(), mapping={k: values.pack(v) for k, v in entries.items()})
    return capture.snapshot_capture(
        title="Export me", description="for export", use_cache=True, created_by=None
    )


def _check(rows: dict[str, dict]) -> None:
    a = rows["X:A:SP"]
    assert a["setpointValue"]["value"] == 1.25
    assert a["setpointValue"]["units"] == "mA" and a["setpointValue"]["precision"] == 2
    assert a["setpointValue"]["upper_ctrl_limit"] == 10.0
    assert a["setpointValue"]["source"] == "cache"
    assert a["readbackValue"]["value"] == 1.5
    assert (a["readbackValue"]["status"], a["readbackValue"]["severity"]) == (3, 1)
    assert a["setpointValue"]["timestamp"].startswith("2026-01-27T")
    enum = rows["X:ENUM:SP"]["setpointValue"]
    assert (enum["value"], enum["label"]) == (2, "FAULT")
    assert rows["X:STR:SP"]["setpointValue"]["value"] == 'a "quoted", string'
    assert rows["X:WAVE:SP"]["setpointValue"]["value"] == [0.5, 1.5, -2.0]
    nan = rows["X:NAN:SP"]["setpointValue"]
    assert nan["value"] is None and nan["error"] == values.NON_FINITE
    assert rows["X:RO:RBV"]["readbackValue"]["value"] == 42
    assert rows["X:RO:RBV"]["setpointValue"] is None


def test_export_json_round_trip(api, snapshot):
    response = api.get(f"/v1/snapshots/{snapshot.pk}/export?format=json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    body = json.loads(b"".join(response.streaming_content))
    assert body["snapshot"]["id"] == str(snapshot.pk)
    assert body["snapshot"]["comment"] == "for export" and body["snapshot"]["pvCount"] == 6
    names = [r["pvName"] for r in body["pvValues"]]
    assert names == sorted(names) and len(names) == 6
    _check({r["pvName"]: r for r in body["pvValues"]})


def _num(text: str):
    """A CSV cell back to a number (or None when empty)."""
    if not text:
        return None
    return float(text) if "." in text or "e" in text else int(text)


def _cell_value(raw: str, label: str):
    if raw == "":
        return None
    if raw.startswith("["):
        return json.loads(raw)
    if label:
        return int(raw)
    try:
        return _num(raw)
    except ValueError:
        return raw


def _csv_rows(text: str) -> dict[str, dict]:
    """Parse an export CSV back into the JSON export's row shape."""
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames) == export.CSV_HEADER
    out = {}
    for line in reader:
        row = {"pvName": line["pvName"], "pvId": line["pvId"] or None}
        for side in ("setpoint", "readback"):
            if not line[f"{side}Source"] and not line[f"{side}Error"]:
                row[f"{side}Value"] = None
                continue
            row[f"{side}Value"] = {
                "value": _cell_value(line[f"{side}Value"], line[f"{side}Label"]),
                "label": line[f"{side}Label"] or None,
                "status": _num(line[f"{side}Status"]),
                "severity": _num(line[f"{side}Severity"]),
                "timestamp": line[f"{side}Timestamp"] or None,
                "units": line[f"{side}Units"] or None,
                "precision": _num(line[f"{side}Precision"]),
                "upper_ctrl_limit": _num(line[f"{side}UpperCtrlLimit"]),
                "source": line[f"{side}Source"] or None,
                "error": line[f"{side}Error"] or None,
            }
        out[row["pvName"]] = row
    return out


def test_export_csv_round_trip_api_and_command(api, snapshot, tmp_path):
    response = api.get(f"/v1/snapshots/{snapshot.pk}/export?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    rows = _csv_rows(text)
    assert len(rows) == 6
    _check(rows)
    out = tmp_path / "snap.csv"
    call_command("export_snapshot", str(snapshot.pk), "--format", "csv", "--output", str(out))
    assert out.read_bytes().decode() == text
    out_json = tmp_path / "snap.json"
    call_command("export_snapshot", str(snapshot.pk), "--output", str(out_json))
    body = json.loads(out_json.read_text())
    _check({r["pvName"]: r for r in body["pvValues"]})


def test_export_errors(api, snapshot):
    error(api.get(f"/v1/snapshots/{snapshot.pk}/export?format=xml"), 422)
    error(api.get(f"/v1/snapshots/{uuid.uuid4()}/export?format=csv"), 404)
    error(api.get("/v1/snapshots/bad/export"), 404)
    with pytest.raises(CommandError, match="not found"):
        call_command("export_snapshot", str(uuid.uuid4()))


def test_nan_never_reaches_the_wire(api, snapshot):
    text = b"".join(api.get(f"/v1/snapshots/{snapshot.pk}/export").streaming_content).decode()

    def refuse(token):
        raise AssertionError(f"{token} in the export")

    body = json.loads(text, parse_constant=refuse)
    nan_row = next(r for r in body["pvValues"] if r["pvName"] == "X:NAN:SP")
    assert nan_row["setpointValue"]["value"] is None
    csv_text = b"".join(api.get(f"/v1/snapshots/{snapshot.pk}/export?format=csv").streaming_content)
    cells = [c.lower() for row in csv.reader(io.StringIO(csv_text.decode())) for c in row]
    assert not {"nan", "inf", "-inf", "infinity", "-infinity"} & set(cells)


# --- CSV formula injection (issue 15, item 6) ---------------------------------------------------


@pytest.fixture
def formulas(db, redis_client, monitor_heartbeat):
    """A snapshot whose text cells would run as spreadsheet formulas, beside negative numbers."""
    names = ["X:CMD:SP", "X:SUM:SP", "X:LBL:SP", "X:NEG:SP", "X:NEGTXT:SP", "-X:NAME:SP"]
    for name in names:
        PV.objects.create(setpoint_address=name)
    now = time.time()
    base = {"connected": True, "updated_at": now, "status": 0, "severity": 0, "timestamp": TS}
    entries = {
        "X:CMD:SP": {**base, "value": "=cmd|' /C calc'!A0"},
        "X:SUM:SP": {**base, "value": "@SUM(A1:A2)", "units": "+mA"},
        "X:LBL:SP": {**base, "value": "=EVIL", "index": 0, "enum_strs": ["=EVIL", "OK"]},
        "X:NEG:SP": {**base, "value": -1.5, "units": "\tTAB", "lower_ctrl_limit": -10.0},
        "X:NEGTXT:SP": {**base, "value": "-1.5"},
        "-X:NAME:SP": {**base, "value": "\rCR"},
    }
    redis_client.hset(events.values_hash(), mapping={k: values.pack(v) for k, v in entries.items()})
    return capture.snapshot_capture(
        title="formulas", description=None, use_cache=True, created_by=None
    )


def test_export_csv_neutralises_formulas_and_keeps_numbers(api, formulas, tmp_path):
    text = b"".join(
        api.get(f"/v1/snapshots/{formulas.pk}/export?format=csv").streaming_content
    ).decode()
    lines = list(csv.reader(io.StringIO(text)))
    # no cell starts a formula, except plain numbers (-1.5 and -10.0 stay numbers)
    starts = [c for row in lines for c in row if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert sorted(starts) == ["-1.5", "-1.5", "-10.0"], starts
    rows = {row["pvName"]: row for row in csv.DictReader(io.StringIO(text))}
    assert rows["X:CMD:SP"]["setpointValue"] == "'=cmd|' /C calc'!A0"
    assert rows["X:SUM:SP"]["setpointValue"] == "'@SUM(A1:A2)"
    assert rows["X:SUM:SP"]["setpointUnits"] == "'+mA"
    assert (rows["X:LBL:SP"]["setpointValue"], rows["X:LBL:SP"]["setpointLabel"]) == (
        "0",
        "'=EVIL",
    )
    assert rows["X:NEG:SP"]["setpointValue"] == "-1.5"
    assert rows["X:NEG:SP"]["setpointUnits"] == "'\tTAB"
    assert rows["X:NEG:SP"]["setpointLowerCtrlLimit"] == "-10.0"
    assert rows["X:NEGTXT:SP"]["setpointValue"] == "-1.5"  # a number as text: still a number
    assert rows["'-X:NAME:SP"]["setpointValue"] == "'\rCR"
    out = tmp_path / "formulas.csv"
    call_command("export_snapshot", str(formulas.pk), "--format", "csv", "--output", str(out))
    assert out.read_bytes().decode() == text  # the command writes the same cells
