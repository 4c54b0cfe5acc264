"""Snapshot import (issue 17 item 7): export then import gives a snapshot whose compare with
the original shows no difference; malformed files name the line; nothing is half-written."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from pvs.models import PV
from snapshots.models import Snapshot, SnapshotValue, ValueSource
from squirrel.models import AuditEvent
from tests.conftest import error, payload
from tests.snapshots.factories import captured, entry, snapshot_seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def original() -> Snapshot:
    pvs = [
        PV.objects.create(setpoint_address=f"IMP:{i}:SP", readback_address=f"IMP:{i}:RBV")
        for i in range(5)
    ]
    ro = PV.objects.create(readback_address="IMP:RO")
    rows = [
        captured(pvs[0], entry(1.5, units="mm", precision=3), entry(1.25, severity=1, status=3)),
        captured(pvs[1], entry(7), entry([1.0, 2.0, 3.5])),
        captured(pvs[2], entry("=cmd", units=None)),
        captured(pvs[3], entry("ON", index=1, enum_strs=["OFF", "ON"])),
        captured(pvs[4], {"value": None, "connected": False, "error": "no answer"}),
        captured(ro, None, entry(-2.5)),
        captured(None, entry(3.0), name="GONE:PV"),
    ]
    return snapshot_seed("the original", rows, description="before the scan")


def _export(client, snap: Snapshot, fmt: str) -> bytes:
    response = client.get(f"/v1/snapshots/{snap.pk}/export?format={fmt}")
    assert response.status_code == 200
    return b"".join(response.streaming_content)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_then_import_compares_equal(write_client, original, fmt):
    content = _export(write_client, original, fmt)
    ctype = "application/json" if fmt == "json" else "text/csv"
    summary = payload(write_client.post("/v1/snapshots/import", content, content_type=ctype))
    assert summary["kind"] == "imported" and summary["pvCount"] == 7
    assert summary["createdBy"] == "api-key:writer"
    if fmt == "json":
        assert (summary["title"], summary["comment"]) == ("the original (imported)",
                                                          "before the scan")  # fmt: skip
    compared = payload(
        write_client.get(f"/v1/snapshots/{original.pk}/compare/{summary['id']}?onlyDifferent=false")
    )
    assert compared["differenceCount"] == 0 and compared["matchCount"] == 7, compared
    imported = {v.pv_name: v for v in SnapshotValue.objects.filter(snapshot_id=summary["id"])}
    kept = {v.pv_name: v for v in SnapshotValue.objects.filter(snapshot=original)}
    assert {n: v.pv_id for n, v in imported.items()} == {n: v.pv_id for n, v in kept.items()}
    assert imported["IMP:0:SP"].sp_source == ValueSource.IMPORTED
    # Display metadata comes back (an enum's choices are not in the export: its meta differs).
    assert imported["IMP:0:SP"].sp_meta_id == kept["IMP:0:SP"].sp_meta_id
    for field in ("sp_kind", "sp_num", "sp_text", "sp_array", "sp_status", "sp_severity",
                  "sp_ts", "sp_connected", "sp_error", "rb_kind", "rb_num", "rb_array",
                  "rb_status", "rb_severity", "sp_age"):  # fmt: skip
        assert [getattr(imported[n], field) for n in sorted(kept)] == [
            getattr(kept[n], field) for n in sorted(kept)
        ], field
    event = AuditEvent.objects.get(kind="snapshot.import")
    assert (event.actor, event.object_id) == ("api-key:writer", summary["id"])


def test_multipart_upload_with_title(write_client, original):
    upload = io.BytesIO(_export(write_client, original, "csv"))
    upload.name = "snap.csv"
    summary = payload(
        write_client.post("/v1/snapshots/import", {"file": upload, "title": "from file"})
    )
    assert summary["title"] == "from file" and summary["pvCount"] == 7


def test_malformed_files_name_the_line_and_write_nothing(write_client, original):
    csv_text = _export(write_client, original, "csv").decode()
    lines = csv_text.split("\r\n")
    cells = lines[2].split(",")
    cells[6] = "loud"  # setpointStatus
    lines[2] = ",".join(cells)
    lines[4] = "too,few"
    bad = "\r\n".join(lines)
    before = Snapshot.objects.count()
    message = error(write_client.post("/v1/snapshots/import", bad, content_type="text/csv"), 422)
    assert "line 3: setpointValue.status: 'loud' is not an integer" in message
    assert "line 5: row: 2 cells" in message
    assert "line 1" in error(
        write_client.post("/v1/snapshots/import", "a,b\r\n1,2", content_type="text/csv"), 422
    )
    assert "line 2, column" in error(
        write_client.post("/v1/snapshots/import", '{"pvValues":\n[1,', content_type="text/plain"),
        422,
    )
    doc = {"pvValues": [{"pvName": "X", "setpointValue": {"value": 1, "timestamp": "noon"}}]}
    assert "pvValues[0]: setpointValue.timestamp" in error(
        write_client.post("/v1/snapshots/import", doc, format="json"), 422
    )
    assert "no values" in error(
        write_client.post("/v1/snapshots/import", {"pvValues": []}, format="json"), 422
    )
    assert "file" in error(write_client.post("/v1/snapshots/import", {"x": "1"}), 422)
    assert Snapshot.objects.count() == before
    assert not AuditEvent.objects.filter(kind="snapshot.import").exists()


def test_import_command(tmp_path, write_client, original):
    path = tmp_path / "snap.json"
    path.write_bytes(_export(write_client, original, "json"))
    out = io.StringIO()
    call_command("import_snapshot", str(path), "--title", "cli copy", stdout=out)
    assert "with 7 values" in out.getvalue()
    snap = Snapshot.objects.get(title="cli copy")
    assert snap.kind == "imported"
    assert AuditEvent.objects.get(kind="snapshot.import").actor.startswith("cli:")
    bad = tmp_path / "bad.csv"
    bad.write_text("nope\n")
    with pytest.raises(CommandError, match="line 1"):
        call_command("import_snapshot", str(bad))
