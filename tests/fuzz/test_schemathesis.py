"""Schemathesis against /openapi.json: every operation, no server error (issue: "Fuzzing the API").

The app runs in-process through Django's WSGI handler, on the test's own thread, so it uses
the test database; ``transactional_db`` keeps it in autocommit as in production (on-commit
enqueues happen: Celery jobs land under this run's Redis prefix and stay queued, no worker
runs) and flushes every table after each operation; Redis keys go with ``redis_client``.
Requests carry a read+write API key, so the fuzzer reaches the views rather than 401s. EPICS
timeouts are cut to a tenth of a second and the client looks for IOCs on a free loopback port
where none answers, so the direct reads and writes (sync capture, restore, plans, test-epics)
fail fast. No operation is excluded.

Two passes, one pytest test per operation each (schemathesis' parametrization), with a fixed
seed, valid and invalid input, through the examples, coverage and fuzzing phases:
``test_api_fuzz`` on an empty catalog (generated ids: 404s), ``test_api_fuzz_existing`` with
the path naming rows that exist. Checks: no server error, and the response's status, content
type, headers and body as the schema documents them. The run ends with a one-line summary
(operations, cases, statuses) on the terminal.

    .venv/bin/pytest tests/fuzz -q
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig

from snapshots import restore
from snapshots.services import snapshot_create_enqueue
from squirrel.models import TOKEN_PREFIX, ApiKey, hash_token
from tests.conftest import make_key
from tests.epics import epics_environ, free_port
from tests.pvs.factories import PVFactory
from tests.restore.conftest import cache_set
from tests.snapshots.factories import captured, entry, snapshot_seed
from tests.tags.factories import TagFactory

SEED = 20260527
MAX_EXAMPLES = 25  # fuzzing-phase cases per operation, on top of the coverage phase's
TOKEN = TOKEN_PREFIX + secrets.token_urlsafe(32)  # its key row is made per test (api_key)

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "headers": {"X-API-Key": TOKEN},
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            "with-security-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
        },
    }
)

schema = schemathesis.openapi.from_wsgi(
    "/openapi.json",
    get_wsgi_application(),
    config=CONFIG,
)


@pytest.fixture(scope="module")
def outcomes(request) -> Iterator[Counter]:
    """(operation, status) of every case of the module, summed up on the terminal at its end."""
    counts: Counter = Counter()
    yield counts
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None or not counts:
        return
    by_status: Counter = Counter()
    for (_, status), n in counts.items():
        by_status[status] += n
    with capture.global_and_fixture_disabled():
        reporter.write_line(
            f"\nschemathesis: {len({op for op, _ in counts})} operations, "
            f"{sum(counts.values())} cases; by status: "
            + ", ".join(f"{status}: {n}" for status, n in sorted(by_status.items()))
        )


def _record(outcomes: Counter, case, response) -> None:
    outcomes[case.operation.label, str(response.status_code)] += 1


@pytest.fixture
def api_key(transactional_db, redis_client, settings) -> Iterator[str]:
    """The read+write+restore+admin key of TOKEN (admin and restore: the key and restore
    routes are fuzzed past their permission checks); fast-failing EPICS with no IOC to find."""
    settings.EPICS_CONNECT_TIMEOUT = 0.1
    settings.EPICS_TIMEOUT = 0.1
    settings.RESTORE_SETTLE_TIME = 0.0
    ApiKey.objects.create(
        app_name="fuzzer",
        token_hash=hash_token(TOKEN),
        read_access=True,
        write_access=True,
        admin_access=True,
        restore_access=True,
    )
    with epics_environ(free_port()):
        yield TOKEN


@pytest.fixture
def existing(api_key, redis_client) -> dict[str, str]:
    """One row of each kind a path names, by path parameter name, and a live cache.

    A tagged PV, two snapshots of it, a capture job, a restore plan, a restore run now (its
    writes fail: no IOC) and another API key.
    """
    tag = TagFactory()
    pv = PVFactory(setpoint_address="FUZZ:SP", readback_address="FUZZ:SP:RBV", tags=[tag])
    cache_set(redis_client, {"FUZZ:SP": 1.5, "FUZZ:SP:RBV": 1.5})
    first = snapshot_seed("first", [captured(pv, entry(1.0), entry(1.0))])
    second = snapshot_seed("second", [captured(pv, entry(2.0), entry(2.0))])
    job = snapshot_create_enqueue(
        title="queued", description=None, use_cache=True, created_by="fuzz"
    )
    plan = restore.restore_plan_create(
        snapshot_id=first.pk, selection=restore.Selection(), created_by="fuzz"
    )
    done = restore.restore_request(
        snapshot_id=first.pk, selection=restore.Selection(), created_by="fuzz", enqueue=False
    )
    restore.restore_run(restore_id=str(done.pk))
    other_key, _ = make_key("other", read=True, write=False)
    ids = {
        "pv_id": pv.pk,
        "group_id": tag.group_id,
        "tag_id": tag.pk,
        "snapshot_id": first.pk,
        "other_id": second.pk,
        "job_id": job.pk,
        "plan_id": plan.pk,
        "restore_id": done.pk,
        "key_id": other_key.pk,
    }
    return {name: str(pk) for name, pk in ids.items()}


@schema.parametrize()
# One key and one database per operation, shared by its cases on purpose.
@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_fuzz(case, api_key, outcomes) -> None:
    response = case.call_and_validate()
    _record(outcomes, case, response)


@schema.include(path_regex=r"\{").parametrize()
@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_fuzz_existing(case, existing, outcomes) -> None:
    """The operations on one row, with the path naming rows that exist (queries and bodies
    still fuzzed), so that they get past the lookup."""
    case.path_parameters = {
        name: existing.get(name, value) for name, value in case.path_parameters.items()
    }
    response = case.call_and_validate()
    _record(outcomes, case, response)
