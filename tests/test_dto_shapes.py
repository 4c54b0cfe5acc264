"""Each hand-built DTO answers exactly the keys its schema serializer declares.

The OpenAPI schema is generated from the ``*OutSerializer`` classes, the answers from the DTO
builders beside them. This compares the two on real rows, nested shapes included, so a key
added to one and not the other fails here rather than in a frontend.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from rest_framework import serializers

from jobs.models import Job
from jobs.serializers import JobOutSerializer, job_dto
from pvs.models import PV
from pvs.serializers import PVElementOutSerializer, pv_element
from snapshots import compare, live_verdicts
from snapshots.live_serializers import LiveRowsOutSerializer, live_rows_dto
from snapshots.models import Outcome, Restore, RestoreOutcome, Snapshot
from snapshots.restore.plan import restore_plan_create
from snapshots.restore.records import outcome_rows, plan_items_rows, summary_store
from snapshots.restore.request import restore_plan_execute_request
from snapshots.restore.selection import Selection
from snapshots.restore.serializers import (
    RestoreJobCreatedOutSerializer,
    RestoreOutcomeOutSerializer,
    RestoreOutSerializer,
    RestorePlanItemOutSerializer,
    RestorePlanOutSerializer,
    RestoreResultOutSerializer,
    RestoreStageOutSerializer,
    job_created_dto,
    outcome_json,
    plan_dto,
    plan_item_json,
    restore_dto,
    restore_result_dto,
)
from snapshots.schedule_serializers import ScheduleOutSerializer, schedule_dto
from snapshots.schedules import ScheduleData, schedule_create
from snapshots.serializers import (
    ComparisonOutSerializer,
    PVHistoryItemOutSerializer,
    PVValueOutSerializer,
    SnapshotSummaryMetaOutSerializer,
    SnapshotSummaryOutSerializer,
    pv_history_dto,
    snapshot_summary_dto,
    snapshot_summary_meta_dto,
    value_row_json,
)
from snapshots.services import snapshots_metadata
from snapshots.storage import pv_history_rows, snapshot_value_rows
from squirrel import audit
from squirrel.apikey_views import ApiKeyOutSerializer, api_key_dto
from squirrel.audit_views import AUDIT_COLUMNS, AuditEventOutSerializer, audit_event_dto
from squirrel.models import ApiKey, AuditEvent
from tags.models import Tag, TagGroup
from tags.serializers import (
    TagGroupOutSerializer,
    TagGroupSummaryOutSerializer,
    TagOutSerializer,
    tag_dto,
    tag_group_dto,
    tag_group_summaries,
)
from tests.restore.conftest import cache_set, snapshot_make

pytestmark = [pytest.mark.django_db]


def _mismatches(data: Any, serializer: serializers.Serializer, path: str) -> list[str]:
    """Where ``data`` (JSON-decoded) and ``serializer``'s fields disagree, nested serializers
    followed into objects and list items."""
    if not isinstance(data, dict):
        return [f"{path}: {type(data).__name__}, not an object"]
    fields = serializer.fields
    out = [f"{path}: {sorted(set(data) ^ set(fields))}"] if set(data) != set(fields) else []
    for name, field in fields.items():
        value = data.get(name)
        if isinstance(field, serializers.ListSerializer) and isinstance(value, list):
            for i, item in enumerate(value):
                out += _mismatches(item, field.child, f"{path}.{name}[{i}]")
        elif isinstance(field, serializers.Serializer) and value is not None:
            out += _mismatches(value, field, f"{path}.{name}")
    return out


def assert_shape(dto: Any, serializer: serializers.Serializer) -> None:
    """``dto`` as it goes on the wire (orjson, Fragments included) matches ``serializer``."""
    wire = orjson.loads(dto if isinstance(dto, str) else orjson.dumps(dto))
    assert _mismatches(wire, serializer, type(serializer).__name__) == []


def test_the_check_fails_on_a_missing_or_extra_key():
    dto = {"id": "x", "name": "n", "description": None}
    assert _mismatches(dto, TagOutSerializer(), "T") == []
    assert _mismatches({**dto, "groupId": "g"}, TagOutSerializer(), "T") == ["T: ['groupId']"]
    nested = {"id": "g", "name": "n", "description": None, "tags": [{"id": "x"}]}
    nested |= {"createdDate": "d", "lastModifiedDate": "d"}
    assert _mismatches(nested, TagGroupOutSerializer(), "G") == [
        "G.tags[0]: ['description', 'name']"
    ]


@pytest.fixture
def catalog():
    group = TagGroup.objects.create(name="Area")
    tag = Tag.objects.create(name="LI20", group=group, description="linac")
    pv = PV.objects.create(setpoint_address="D:W:SP", readback_address="D:W:RBV")
    pv.tags.add(tag)
    equal = PV.objects.create(setpoint_address="D:E:SP")
    return {"group": group, "tag": tag, "pv": pv, "equal": equal}


def test_catalog_tags_jobs_and_keys(catalog):
    assert_shape(pv_element(catalog["pv"]), PVElementOutSerializer())
    assert_shape(tag_dto(catalog["tag"].pk, "LI20", None), TagOutSerializer())
    assert_shape(tag_group_dto(catalog["group"]), TagGroupOutSerializer())
    assert_shape(tag_group_summaries()[0], TagGroupSummaryOutSerializer())
    job = Job.objects.create(type=Job.Type.SNAPSHOT_CREATE, job_data={"title": "t"})
    assert_shape(job_dto(job), JobOutSerializer())
    key = ApiKey.objects.create(app_name="shapes", token_hash="0" * 64, read_access=True)
    assert_shape(api_key_dto(key), ApiKeyOutSerializer())
    audit.record("cli:op", "pv.update", catalog["pv"], before={"a": 1}, after={"a": 2})
    row = AuditEvent.objects.values_list(*AUDIT_COLUMNS).first()
    assert_shape(audit_event_dto(row), AuditEventOutSerializer())


def test_snapshots_values_and_compare(catalog):
    snap = snapshot_make([(catalog["pv"], ("ON", 1)), (catalog["equal"], 2.0)])
    other = snapshot_make([(catalog["pv"], 3.0)])
    assert_shape(snapshot_summary_dto(snap), SnapshotSummaryOutSerializer())
    rows = list(snapshot_value_rows(snapshot_id=snap.pk))
    assert len(rows) == 2
    for row in rows:
        assert_shape(value_row_json(row), PVValueOutSerializer())
    filters = compare.CompareFilters(only_different=False, tag_ids=(), qualities=())
    result = compare.snapshot_compare(
        snapshot1_id=str(snap.pk), snapshot2_id=str(other.pk), filters=filters
    )
    assert result.difference_count >= 1
    assert_shape(result.to_wire(), ComparisonOutSerializer())


def test_live_rows(catalog, redis_client):
    snap = snapshot_make([(catalog["pv"], ("ON", 1)), (catalog["equal"], 2.0)])
    cache_set(redis_client, {"D:W:SP": "ON", "D:W:RBV": 1.0, "D:E:SP": 2.5})
    live_verdicts.verdicts_reset()
    try:
        comparing = live_verdicts.Page("comparing", [], {}, 0, None, False, '"x"')
        dto = live_rows_dto(str(snap.pk), snap.title, comparing, offset=0, limit=10)
        assert_shape(dto, LiveRowsOutSerializer())
        state = live_verdicts.verdict_state(snapshot_id=str(snap.pk), title=snap.title)
        page = state.page(live_verdicts.PageQuery(), None)
        assert len(page.rows) == 2
        dto = live_rows_dto(str(snap.pk), snap.title, page, offset=0, limit=100)
        assert_shape(dto, LiveRowsOutSerializer())
    finally:
        live_verdicts.verdicts_reset()


def test_restore_plans_restores_and_outcomes(catalog, redis_client):
    snap = snapshot_make([(catalog["pv"], 1.0), (catalog["equal"], 2.0)])
    cache_set(redis_client, {"D:W:SP": 9.0, "D:E:SP": 2.0})
    plan = restore_plan_create(snapshot_id=snap.pk, selection=Selection(), created_by="me")
    assert_shape(plan_dto(plan), RestorePlanOutSerializer())
    items = list(plan_items_rows(plan=plan, action=None, limit=None, offset=0))
    assert len(items) == 2
    for row in items:
        assert_shape(plan_item_json(row), RestorePlanItemOutSerializer())

    restore = restore_plan_execute_request(plan_id=plan.pk, created_by="me", enqueue=False)
    assert_shape(job_created_dto(restore), RestoreJobCreatedOutSerializer())
    assert_shape(restore_dto(restore), RestoreOutSerializer())
    RestoreOutcome.objects.create(
        restore=restore,
        pv_id=catalog["pv"].pk,
        pv_name="D:W:SP",
        outcome=Outcome.WRITE_FAILED,
        error="no answer",
    )
    Restore.objects.filter(pk=restore.pk).update(failure_count=1)
    restore.refresh_from_db()
    summary_store(restore)
    assert restore.stages and restore.stages[0]["stage"] == 0
    assert_shape(restore.stages[0], RestoreStageOutSerializer())
    result = restore_result_dto(restore)
    assert len(result["failures"]) == 1
    assert_shape(result, RestoreResultOutSerializer())
    outcomes = list(outcome_rows(restore=restore, outcome=None, limit=None, offset=0))
    assert outcomes
    for row in outcomes:
        assert_shape(outcome_json(row), RestoreOutcomeOutSerializer())


def test_lifecycle_schedules_meta_and_history(catalog):
    schedule = schedule_create(
        data=ScheduleData(name="s", interval_seconds=60, tag_filters=[[str(catalog["tag"].pk)]]),
        actor="cli:t",
        created_by="cli:t",
    )
    assert_shape(schedule_dto(schedule), ScheduleOutSerializer())
    snap = snapshot_make([(catalog["pv"], 1.0)])
    Snapshot.objects.filter(pk=snap.pk).update(
        labels=["golden"],
        schedule=schedule,
        selection={"pvIds": None, "tagFilters": [[str(catalog["tag"].pk)]]},
        metadata={"M:E": 1.5},
    )
    snap.refresh_from_db()
    assert_shape(snapshot_summary_dto(snap), SnapshotSummaryOutSerializer())
    meta = snapshots_metadata(snapshots=[snap], addresses=["M:E", "D:W:SP"])
    assert meta[snap.pk] == {"M:E": 1.5, "D:W:SP": 1.0}
    assert_shape(snapshot_summary_meta_dto(snap, meta[snap.pk]), SnapshotSummaryMetaOutSerializer())
    rows = pv_history_rows(pv_id=catalog["pv"].pk, limit=10, offset=0)
    assert len(rows) == 1
    assert_shape(pv_history_dto(rows[0]), PVHistoryItemOutSerializer())
