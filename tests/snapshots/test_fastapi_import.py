"""``manage.py import_fastapi_squirrel`` against a real FastAPI Squirrel database: the shared
fixture (``fastapi_fixture/``, written by that backend's own code) loaded into a scratch
database that this module creates and drops."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from pvs.models import PV
from snapshots.fastapi_import import fastapi_import
from snapshots.fastapi_import.source import Source, raw_value, unwrap
from snapshots.fastapi_import.verify import verify
from snapshots.models import Snapshot, SnapshotValue
from squirrel.models import ApiKey, AuditEvent
from tags.models import Tag, TagGroup
from tests.conftest import error, payload

DUMP = Path(__file__).parent / "fastapi_fixture" / "dump.sql.gz"
TOKENS = {
    "fixture-rw": "sq_coWHwauy67U-Mku-w0JwrjMTqKs6yK97jHNsEL0TbHY",
    "fixture-ro": "sq_4pwKhcplInc9nJP7OYhJ9CJ6zgjtw7OVLOZLKlguVDA",
}
TABLES = ("pv", "tag_group", "tag", "pv_tag", "snapshot", "snapshot_value", "api_key")


def _server_dsn(dbname: str) -> str:
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgresql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{dbname}"


@pytest.fixture(scope="session")
def source_dsn() -> Iterator[str]:
    """The fixture dump loaded into a scratch database of this worktree, dropped at the end."""
    name = f"fastapi_fixture_{zlib.crc32(str(Path(__file__).resolve()).encode()):08x}"
    admin = psycopg.connect(_server_dsn("postgres"), autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _server_dsn(name)
    try:
        subprocess.run(
            ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", dsn],
            input=gzip.decompress(DUMP.read_bytes()),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        yield dsn
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def src(source_dsn) -> Iterator[psycopg.Connection]:
    with psycopg.connect(source_dsn) as conn:
        yield conn


def _run(dsn: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_fastapi_squirrel", "--dsn", dsn, "--no-progress", *args,
                 stdout=out, stderr=err)  # fmt: skip
    return out.getvalue(), err.getvalue()


def _our_counts() -> dict[str, int]:
    return {
        "pv": PV.objects.count(),
        "tag_group": TagGroup.objects.count(),
        "tag": Tag.objects.count(),
        "pv_tag": PV.tags.through.objects.count(),
        "snapshot": Snapshot.objects.count(),
        "snapshot_value": SnapshotValue.objects.count(),
        "api_key": ApiKey.objects.count(),
    }


def _streamed(response) -> Any:
    """The payload of a streamed (snapshot detail) answer, after checking the envelope."""
    assert response.status_code == 200
    body = json.loads(b"".join(response.streaming_content))
    assert body["errorCode"] == 0 and body["errorMessage"] is None
    return body["payload"]


def _ids(src, table: str) -> set[str]:
    return {str(r[0]) for r in src.execute(f"SELECT id FROM {table}")}


@pytest.mark.django_db
def test_everything_moves_with_ids_counts_and_dates(src, source_dsn):
    out, _ = _run(source_dsn)
    assert "verified: counts and sampled values equal the source" in out
    source_counts = {t: src.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    assert source_counts["snapshot_value"] == 4785  # the fixture as its README describes it
    assert _our_counts() == source_counts
    assert {str(p) for p in PV.objects.values_list("pk", flat=True)} == _ids(src, "pv")
    assert {str(s) for s in Snapshot.objects.values_list("pk", flat=True)} == _ids(src, "snapshot")
    assert {str(t) for t in Tag.objects.values_list("pk", flat=True)} == _ids(src, "tag")
    links = {(str(a), str(b)) for a, b in PV.tags.through.objects.values_list("pv_id", "tag_id")}
    assert links == {(str(a), str(b)) for a, b in src.execute("SELECT pv_id, tag_id FROM pv_tag")}
    for sid, title, description, author, created, n in src.execute(
        "SELECT s.id, title, description, created_by, created_at, (SELECT count(*) FROM"
        " snapshot_value v WHERE v.snapshot_id = s.id) FROM snapshot s"
    ):
        ours = Snapshot.objects.get(pk=sid)
        assert (ours.title, ours.description, ours.created_by, ours.created_at) == (
            title, description, author, created,
        )  # fmt: skip
        assert ours.pv_count == n == ours.values.count()
    # The PVs with a description (non-ASCII) and tolerances keep them exactly.
    for row in src.execute(
        "SELECT id, setpoint_address, readback_address, description, abs_tolerance,"
        " rel_tolerance, read_only FROM pv WHERE description IS NOT NULL"
    ):
        pv = PV.objects.get(pk=row[0])
        assert (pv.setpoint_address, pv.readback_address, pv.description, pv.abs_tolerance,
                pv.rel_tolerance, pv.read_only) == row[1:]  # fmt: skip
        assert "µA" in pv.description
    events = AuditEvent.objects.filter(kind="import.fastapi").order_by("id")
    assert [e.detail["phase"] for e in events] == ["catalog", "snapshots", "keys"]
    assert events[1].detail["counts"]["snapshot_value"]["created"] == 4785
    assert all(e.actor.startswith("cli:") for e in events)


KINDS = {  # name pattern -> what the value is, in the fixture's IOC
    "FIX:DEV1:SP": float,  # analog
    "FIX:MODE0:SP": int,  # an mbbo: its enum index
    "FIX:LONG0:SP": int,
    "FIX:STR0:SP": str,
    "FIX:WAVE0:SP": list,  # waveform
}


@pytest.mark.django_db
def test_sampled_values_of_every_kind_equal_the_source_on_the_wire(src, source_dsn):
    _run(source_dsn)
    api = APIClient()
    for (sid,) in src.execute("SELECT id FROM snapshot"):
        body = _streamed(api.get(f"/v1/snapshots/{sid}"))
        rows = {r["pvName"]: r for r in body["pvValues"]}
        assert len(rows) == body["pvCount"] == 1595
        stored = dict(
            src.execute(
                "SELECT pv_name, setpoint_value::text FROM snapshot_value"
                " WHERE snapshot_id = %s AND pv_name = ANY(%s)",
                [sid, list(KINDS)],
            ).fetchall()
        )
        for name, kind in KINDS.items():
            expected = raw_value(stored[name])
            got = rows[name]["setpointValue"]
            assert type(got["value"]) is kind and got["value"] == expected, (sid, name)
            assert got["source"] == "imported"
            assert got["connected"] is None
        # The double-encoded rows' status/severity were dropped by its monitor: still null.
        sample = unwrap(stored["FIX:DEV1:SP"])
        assert rows["FIX:DEV1:SP"]["setpointValue"]["status"] == sample["status"]


@pytest.mark.django_db
def test_both_encodings_are_in_the_fixture_and_decode_alike(src):
    kinds = dict(
        src.execute(
            "SELECT jsonb_typeof(setpoint_value), count(*) FROM snapshot_value GROUP BY 1"
        ).fetchall()
    )
    assert kinds.keys() == {"object", "string"}  # the quirk the importer must handle
    text = src.execute(
        "SELECT setpoint_value::text FROM snapshot_value WHERE jsonb_typeof(setpoint_value)"
        " = 'string' AND pv_name = 'FIX:WAVE0:SP'"
    ).fetchone()[0]
    assert isinstance(json.loads(text), str)
    assert isinstance(raw_value(text), list) and len(raw_value(text)) > 1


@pytest.mark.django_db
def test_fixture_tokens_authenticate_with_their_scopes(source_dsn, settings):
    _run(source_dsn)
    settings.ANONYMOUS_ACCESS = "none"
    snapshot = Snapshot.objects.order_by("created_at").first()
    rw, ro = APIClient(), APIClient()
    rw.credentials(HTTP_X_API_KEY=TOKENS["fixture-rw"])
    ro.credentials(HTTP_X_API_KEY=TOKENS["fixture-ro"])
    error(APIClient().get("/v1/snapshots"), 401)
    assert payload(ro.get("/v1/snapshots"))
    assert _streamed(rw.get(f"/v1/snapshots/{snapshot.pk}?limit=1"))["pvCount"] == 1595
    assert "write access" in error(
        ro.put(f"/v1/snapshots/{snapshot.pk}", {"title": "renamed"}, format="json"), 401
    )
    assert payload(rw.put(f"/v1/snapshots/{snapshot.pk}", {"title": "renamed"}, format="json"))
    assert Snapshot.objects.get(pk=snapshot.pk).title == "renamed"
    keys = {k.app_name: k for k in ApiKey.objects.all()}
    assert (keys["fixture-ro"].read_access, keys["fixture-ro"].write_access) == (True, False)
    # the FastAPI write scope also restored the machine: ours keeps that as the restore scope
    assert keys["fixture-rw"].scope_letters == "rwx" and keys["fixture-rw"].is_active
    assert not keys["fixture-ro"].restore_access
    restore = f"/v1/snapshots/{snapshot.pk}/restore"
    assert "restore" in error(ro.post(restore, {}, format="json"), 401)


@pytest.mark.django_db
def test_a_second_run_writes_nothing_and_says_so(source_dsn):
    _run(source_dsn)
    before = _our_counts()
    last_value = SnapshotValue.objects.order_by("-id").values_list("id", flat=True).first()
    stamps = sorted(PV.objects.values_list("updated_at", flat=True))
    events = AuditEvent.objects.count()
    out, _ = _run(source_dsn)
    assert "nothing to write: everything in the source is already here" in out
    assert "verified" in out
    assert _our_counts() == before
    assert SnapshotValue.objects.order_by("-id").values_list("id", flat=True).first() == last_value
    assert sorted(PV.objects.values_list("updated_at", flat=True)) == stamps
    assert AuditEvent.objects.count() == events  # no write, no audit event


@pytest.mark.django_db
def test_a_conflicting_address_is_reported_and_its_phase_writes_nothing(source_dsn):
    mine = PV.objects.create(setpoint_address="FIX:DEV7:SP", description="ours")
    group = TagGroup.objects.create(name="Local")
    err = io.StringIO()
    with pytest.raises(CommandError, match="phase catalog: 1 conflicts, nothing of it"):
        call_command("import_fastapi_squirrel", "--dsn", source_dsn, "--no-progress",
                     stdout=io.StringIO(), stderr=err)  # fmt: skip
    assert "conflict: pv 'FIX:DEV7:SP' (" in err.getvalue()
    assert f"belongs here to another PV, {mine.pk}" in err.getvalue()
    assert list(PV.objects.all()) == [mine]
    assert list(TagGroup.objects.all()) == [group] and not Tag.objects.exists()
    assert not Snapshot.objects.exists() and not ApiKey.objects.exists()  # nor later phases
    assert not AuditEvent.objects.filter(kind="import.fastapi").exists()


@pytest.mark.django_db
def test_a_taken_key_name_is_reported_and_no_key_is_written(source_dsn):
    ApiKey.objects.create(app_name="fixture-ro", token_hash="0" * 64, read_access=True)
    err = io.StringIO()
    with pytest.raises(CommandError, match="phase keys"):
        call_command("import_fastapi_squirrel", "--dsn", source_dsn, "--only", "keys",
                     "--no-progress", stdout=io.StringIO(), stderr=err)  # fmt: skip
    assert "the name is taken here by active key" in err.getvalue()
    assert ApiKey.objects.count() == 1


@pytest.mark.django_db
def test_update_refreshes_differing_catalog_fields_only_when_asked(src, source_dsn):
    _run(source_dsn, "--only", "catalog")
    pv_id, description = src.execute(
        "SELECT id, description FROM pv WHERE description IS NOT NULL ORDER BY id LIMIT 1"
    ).fetchone()
    PV.objects.filter(pk=pv_id).update(description="edited here", abs_tolerance=9.0)
    PV.objects.get(pk=pv_id).tags.clear()
    out, _ = _run(source_dsn, "--only", "catalog")
    assert "skipped because they differ from the source (--update refreshes them): 1 pv" in out
    assert PV.objects.get(pk=pv_id).description == "edited here"
    out, _ = _run(source_dsn, "--only", "catalog", "--update")
    pv = PV.objects.get(pk=pv_id)
    assert (pv.description, pv.abs_tolerance) == (description, 0.5)
    wanted = {r[0] for r in src.execute("SELECT tag_id FROM pv_tag WHERE pv_id = %s", [pv_id])}
    assert set(pv.tags.values_list("pk", flat=True)) == wanted and wanted
    assert "verified" in out


@pytest.mark.django_db
def test_dry_run_writes_nothing(source_dsn):
    out, _ = _run(source_dsn, "--dry-run")
    assert "dry run, nothing written" in out
    assert "1595" in out  # what it would have written
    assert set(_our_counts().values()) == {0}
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_only_snapshots_keeps_names_when_the_pvs_are_not_here(source_dsn):
    _run(source_dsn, "--only", "snapshots")
    assert SnapshotValue.objects.count() == 4785
    assert not SnapshotValue.objects.filter(pv__isnull=False).exists()  # no PV here: null id
    assert not PV.objects.exists()


@pytest.mark.django_db
def test_verification_reports_a_changed_value_and_a_missing_row(source_dsn):
    result = fastapi_import(dsn=source_dsn, sample=5000)
    assert result.mismatches == []
    SnapshotValue.objects.filter(pv_name="FIX:STR0:SP").update(sp_text="tampered")
    PV.objects.filter(setpoint_address="FIX:LONG3:SP").delete()
    with Source(source_dsn) as source:
        problems = verify(source=source, phases=["catalog", "snapshots"], sample=5000)
    assert any("FIX:STR0:SP" in p and "'tampered' here" in p for p in problems)
    assert any(p.startswith("pv: 1 of 1595 source rows are not here") for p in problems)


@pytest.mark.django_db
def test_the_frontend_pages_of_a_migrated_snapshot_answer(src, source_dsn):
    """What the React frontend calls for the snapshot list, the details page (its URL carries
    the old id), the comparison page, and the tags it shows beside them."""
    _run(source_dsn)
    api = APIClient()
    old = [str(r[0]) for r in src.execute("SELECT id FROM snapshot ORDER BY created_at")]
    listed = payload(api.get("/v1/snapshots"))
    assert [s["id"] for s in listed] == old[::-1]  # newest first
    detail = _streamed(api.get(f"/v1/snapshots/{old[0]}"))
    assert detail["id"] == old[0] and detail["title"] == "Fixture cache snapshot"
    assert detail["comment"] == "taken from the monitor cache"
    row = next(r for r in detail["pvValues"] if r["pvName"] == "FIX:DEV400:SP")
    assert row["tags"] and {t["groupName"] for t in row["tags"]} <= {"Region", "Area", "Subsystem"}
    assert row["setpointName"] == "FIX:DEV400:SP" and row["readbackName"] == "FIX:DEV400:RB"
    compare = payload(api.get(f"/v1/snapshots/{old[1]}/compare/{old[2]}"))
    assert compare["snapshot1Id"] == old[1] and compare["differenceCount"] >= 50
    groups = payload(api.get("/v1/tags"))
    assert {g["name"] for g in groups} == {"Region", "Area", "Subsystem"}
    assert payload(api.get(f"/v1/tags/{groups[0]['id']}"))[0]["tags"]
    page = payload(api.get("/v1/pvs/paged?pageSize=1000"))
    assert page["totalCount"] == 1595
    error(api.get("/v1/snapshots/00000000-0000-0000-0000-000000000000"), 404)


@pytest.mark.django_db
def test_update_refreshes_a_renamed_snapshot_and_a_deactivated_key(source_dsn):
    _run(source_dsn, "--only", "snapshots,keys")
    snapshot = Snapshot.objects.get(title="Fixture direct snapshot")
    Snapshot.objects.filter(pk=snapshot.pk).update(title="renamed here")
    ApiKey.objects.filter(app_name="fixture-rw").update(is_active=False)
    out, _ = _run(source_dsn, "--only", "snapshots,keys")
    assert "(--update refreshes them): 1 snapshot, 1 api_key" in out
    assert Snapshot.objects.get(pk=snapshot.pk).title == "renamed here"
    values = SnapshotValue.objects.count()
    _run(source_dsn, "--only", "snapshots,keys", "--update")
    assert Snapshot.objects.get(pk=snapshot.pk).title == "Fixture direct snapshot"
    assert ApiKey.objects.get(app_name="fixture-rw").is_active
    assert SnapshotValue.objects.count() == values  # values are never rewritten


@pytest.mark.django_db
def test_a_snapshot_here_with_another_value_count_is_a_conflict(source_dsn):
    _run(source_dsn, "--only", "snapshots")
    snapshot = Snapshot.objects.get(title="Fixture cache snapshot")
    Snapshot.objects.filter(pk=snapshot.pk).update(pv_count=7)
    err = io.StringIO()
    with pytest.raises(CommandError, match="phase snapshots: 1 conflicts"):
        call_command("import_fastapi_squirrel", "--dsn", source_dsn, "--only", "snapshots",
                     "--no-progress", stdout=io.StringIO(), stderr=err)  # fmt: skip
    assert f"({snapshot.pk}): exists here with 7 values, the source holds 1595" in err.getvalue()
