"""Moving a running FastAPI Squirrel onto this one (``manage.py import_fastapi_squirrel``).

``fastapi_import`` reads the FastAPI Squirrel's database through one read-only
``REPEATABLE READ`` transaction (``source``) and runs the phases in order -- ``catalog`` (tag
groups, tags, PVs, links), ``snapshots`` (snapshots and every value), ``keys`` (API keys) --
each in ONE transaction of ours: a phase that finds a conflict reports it by object, writes
nothing, and the import stops there (earlier phases stay committed; a run after the conflict
is fixed carries on, since a phase skips what it already wrote). Ids are kept, so the React
frontend's URLs and every script's token keep working. A phase that wrote something records one
audit event ``import.fastapi`` (counts in ``detail``) in its own transaction. After the phases,
``verify`` compares counts and a sample of values with the source.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import transaction

from snapshots.fastapi_import.catalog import catalog_import
from snapshots.fastapi_import.history import snapshots_import
from snapshots.fastapi_import.keys import keys_import
from snapshots.fastapi_import.report import (
    PHASES,
    PhaseConflict,
    PhaseReport,
    Progress,
    summary_lines,
)
from snapshots.fastapi_import.source import KNOWN_HEAD, Source, SourceError
from snapshots.fastapi_import.verify import verify
from squirrel import audit

__all__ = [
    "KNOWN_HEAD",
    "PHASES",
    "ImportResult",
    "PhaseReport",
    "SourceError",
    "fastapi_import",
    "summary_lines",
]

AUDIT_KIND = "import.fastapi"


@dataclass
class ImportResult:
    """What one run did: its phases in order (a phase with conflicts stopped the run), the
    source's alembic head, and the verification's mismatches (None when not verified)."""

    source: str
    head: str | None
    dry_run: bool
    reports: list[PhaseReport] = field(default_factory=list)
    mismatches: list[str] | None = None

    @property
    def conflicts(self) -> list[str]:
        return [c for r in self.reports for c in r.conflicts]

    @property
    def written(self) -> int:
        return sum(r.written for r in self.reports)


class _DryRun(Exception):
    pass


def fastapi_import(
    *,
    dsn: str,
    phases: Sequence[str] = PHASES,
    update: bool = False,
    dry_run: bool = False,
    sample: int = 500,
    progress: Progress | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> ImportResult:
    """Import from the FastAPI Squirrel at ``dsn`` (module docstring). ``dry_run`` runs every
    phase and rolls each back; it is not verified. Raises SourceError when the source cannot
    be read as a FastAPI Squirrel database."""
    with Source(dsn) as source:
        result = ImportResult(source=source.dsn, head=source.head, dry_run=dry_run)
        for name in (p for p in PHASES if p in phases):
            if on_phase is not None:
                on_phase(name)
            report = _run_phase(name, source, update=update, dry_run=dry_run, progress=progress)
            result.reports.append(report)
            if report.conflicts:
                return result
        if not dry_run:
            differing = {i for r in result.reports for i in r.differing_ids}
            result.mismatches = verify(
                source=source, phases=phases, sample=sample, differing=differing
            )
    return result


def _run_phase(
    name: str, source: Source, *, update: bool, dry_run: bool, progress: Progress | None
) -> PhaseReport:
    report = PhaseReport(name=name)
    started = time.monotonic()
    try:
        with transaction.atomic():
            if name == "catalog":
                catalog_import(source=source, report=report, update=update, progress=progress)
            elif name == "snapshots":
                snapshots_import(source=source, report=report, update=update, progress=progress)
            else:
                keys_import(source=source, report=report, update=update)
            if report.conflicts:
                raise PhaseConflict
            if report.written:
                audit.record(
                    audit.cli(),
                    AUDIT_KIND,
                    summary=f"{name}: {report.written} rows written from {source.dsn}",
                    detail={"phase": name, "source": source.dsn, "counts": report.detail()},
                )
            if dry_run:
                raise _DryRun
    except (PhaseConflict, _DryRun):
        pass
    report.seconds = time.monotonic() - started
    return report
