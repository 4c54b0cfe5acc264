"""The OpenAPI schema the fuzzer reads: complete and honest enough to generate real requests."""

from __future__ import annotations

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

from snapshots.models import Outcome, PlanAction


@pytest.fixture(scope="module")
def openapi() -> dict:
    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():
        schema = SchemaGenerator().get_schema(request=None, public=True)
    # ENUM_NAME_OVERRIDES (settings) would name Snapshot.Kind and Restore.Kind apart
    warnings = [w for w in GENERATOR_STATS._warn_cache if "enum naming" not in w]
    errors = list(GENERATOR_STATS._error_cache)
    GENERATOR_STATS.reset()
    assert (errors, warnings) == ([], [])  # e.g. "unable to guess serializer", operationId clash
    return schema


def _operations(openapi: dict):
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_every_operation_documents_its_success_body(openapi):
    for path, method, operation in _operations(openapi):
        content = operation["responses"]["200"]["content"]
        assert content and all("schema" in c for c in content.values()), (method, path)


def test_operation_ids_are_unique(openapi):
    ids = [operation["operationId"] for _, _, operation in _operations(openapi)]
    assert len(ids) == len(set(ids)) and "v1_restores_list" in ids


def test_api_key_is_the_documented_credential(openapi):
    schemes = openapi["components"]["securitySchemes"]
    assert schemes["apiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, method, operation in _operations(openapi):
        if path != "/v1/health/heartbeat":  # the one route without auth
            assert {"apiKeyAuth": []} in operation["security"], (method, path)


def _parameters(operation: dict) -> dict[tuple[str, str], dict]:
    return {(p["in"], p["name"]): p["schema"] for p in operation.get("parameters", [])}


def test_restore_routes_document_bodies_queries_and_headers(openapi):
    paths = openapi["paths"]
    restore = paths["/v1/snapshots/{snapshot_id}/restore"]["post"]
    assert restore["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RestoreOptionsRequest"
    }
    assert {("query", "async"), ("header", "Idempotency-Key")} <= set(_parameters(restore))
    plan = _parameters(paths["/v1/restore-plans/{plan_id}"]["get"])
    assert set(plan["query", "action"]["enum"]) == {str(a.label) for a in PlanAction}
    assert plan["query", "limit"]["type"] == plan["query", "offset"]["type"] == "integer"
    outcomes = _parameters(paths["/v1/restores/{restore_id}"]["get"])
    assert set(outcomes["query", "outcome"]["enum"]) == {str(o.label) for o in Outcome}
    for path in ("/v1/restore-plans/{plan_id}/execute", "/v1/restores/{restore_id}/revert"):
        assert ("header", "Idempotency-Key") in _parameters(paths[path]["post"])
    execute = paths["/v1/restore-plans/{plan_id}/execute"]["post"]
    assert execute["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RestoreExecuteRequest"
    }
    assert "/v1/restore-plans/{plan_id}/approve" in paths


def test_capture_routes_document_their_inputs(openapi):
    paths = openapi["paths"]
    create = paths["/v1/snapshots"]["post"]
    body = openapi["components"]["schemas"]["SnapshotCreateRequest"]
    assert body["required"] == ["title"] and set(body["properties"]) == {
        "title",
        "comment",
        "description",
        "pvIds",  # a subset (issue 17)
        "tagFilters",
    }
    assert {("query", "async"), ("query", "use_cache")} <= set(_parameters(create))
    compare = _parameters(paths["/v1/snapshots/{snapshot_id}/compare/{other_id}"]["get"])
    assert compare["query", "tags"]["items"]["format"] == "uuid"
    assert set(compare["query", "quality"]["items"]["enum"]) == {
        "live",
        "reread",
        "stale",
        "failed",
        "imported",
    }


def test_export_file_is_documented_bare_and_its_errors_enveloped(openapi):
    export = openapi["paths"]["/v1/snapshots/{snapshot_id}/export"]["get"]
    ok = export["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/SnapshotExportOut"}
    assert ok["text/csv"]["schema"] == {"type": "string"}
    assert "4XX" in export["responses"]
    listed = openapi["paths"]["/v1/snapshots"]["get"]["responses"]["200"]["content"]
    assert set(listed["application/json"]["schema"]["properties"]) == {
        "errorCode",
        "errorMessage",
        "payload",
    }
