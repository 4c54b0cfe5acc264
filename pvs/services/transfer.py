"""CSV import and export of the catalog (contract §7, a superset; see pvs.csvio)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from pvs.csvio import STANDARD_COLUMNS, CsvRow, export_header, export_row, identity
from pvs.models import CATALOG_FIELDS, PV
from pvs.services.catalog import analyze_if_bulk, catalog_changed, copy_links, copy_pvs
from squirrel import audit
from squirrel.exceptions import Invalid
from tags.models import Tag, TagGroup
from tags.services import tags_resolve

Progress = Callable[[str, int, int], None]

UPDATABLE = {
    "Readback": "readback_address",
    "Config": "config_address",
    "Description": "description",
    "AbsTolerance": "abs_tolerance",
    "RelTolerance": "rel_tolerance",
    "ReadOnly": "read_only",
    "RestoreStage": "restore_stage",
    "CompletionTimeout": "completion_timeout",
}


@dataclass
class ImportResult:
    """Counts of one import (or of what a dry run would do)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    groups_created: int = 0
    tags_created: int = 0
    errors: list[str] = field(default_factory=list)


class _DryRun(Exception):
    pass


def pv_import(
    *,
    rows: Sequence[CsvRow],
    columns: Sequence[str],
    create_tags: bool = True,
    update: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    actor: str | None = None,
    source: str | None = None,
) -> ImportResult:
    """Import parsed CSV rows in one transaction.

    New PVs are created. Existing ones (found by setpoint, else readback, else config) are
    left alone, or with ``update`` their description/tags/tolerances/read-only/readback/config
    are overwritten, only for the columns the file has. Unknown tag groups and tags are
    created, or with ``create_tags=False`` raise Invalid naming line and column.
    ``dry_run`` does everything, reports the counts and rolls back. The import is audited
    (``pv.import``: the counts and ``source``, the file's name) in its own transaction.
    """
    result = ImportResult()
    try:
        with transaction.atomic():
            _import(rows, columns, create_tags, update, result, progress)
            audit.record(
                actor or audit.system("internal"),
                "pv.import",
                summary=f"{result.created} created, {result.updated} updated from {source}",
                detail={
                    "file": source,
                    "created": result.created,
                    "updated": result.updated,
                    "unchanged": result.unchanged,
                    "skipped": result.skipped,
                    "groupsCreated": result.groups_created,
                    "tagsCreated": result.tags_created,
                    "update": update,
                },
            )
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return result


def _import(
    rows: Sequence[CsvRow],
    columns: Sequence[str],
    create_tags: bool,
    update: bool,
    result: ImportResult,
    progress: Progress | None,
) -> None:
    group_columns = [c for c in columns if c not in STANDARD_COLUMNS]
    wanted: dict[str, set[str]] = {g: set() for g in group_columns}
    for row in rows:
        for group, names in row.tags.items():
            wanted[group].update(names)
    groups_before = {name.lower(): pk for name, pk in TagGroup.objects.values_list("name", "pk")}
    tags_before = Tag.objects.count()
    tag_ids, missing = tags_resolve(names=wanted, create=create_tags)
    if missing:
        raise Invalid(_missing_tag_errors(rows, columns, tag_ids, set(groups_before)))
    result.tags_created = Tag.objects.count() - tags_before
    groups = {name.lower(): pk for name, pk in TagGroup.objects.values_list("name", "pk")}
    result.groups_created = len(groups) - len(groups_before)
    file_groups = {groups[g.lower()] for g in group_columns}

    existing = _existing_by_identity()
    current_tags = _tags_in_groups(file_groups) if existing and file_groups else {}
    now = timezone.now()
    new_pvs: list[tuple[Any, ...]] = []  # in COPY_COLUMNS order
    new_links: list[tuple[uuid.UUID, uuid.UUID]] = []
    changed: list[tuple[uuid.UUID, dict[str, Any], set[uuid.UUID] | None]] = []
    for done, row in enumerate(rows, 1):
        if progress and done % 5000 == 0:
            progress("checking", done, len(rows))
        row_tags = {tag_ids[(g, n)] for g, names in row.tags.items() for n in names}
        found = existing.get(identity(row.setpoint, row.readback, row.config))
        if found is None:
            pk = uuid.uuid4()
            new_pvs.append(
                (
                    pk,
                    now,
                    now,
                    row.setpoint,
                    row.readback,
                    row.config,
                    row.device,
                    row.description,
                    row.abs_tolerance,
                    row.rel_tolerance,
                    row.read_only,
                    row.restore_stage,
                    row.completion_timeout,
                )
            )
            new_links.extend((pk, t) for t in sorted(row_tags))
            continue
        pk, values = found
        diff = {
            name: row.value(column)
            for column, name in UPDATABLE.items()
            if column in columns and row.value(column) != values[name]
        }
        tags_differ = bool(group_columns) and row_tags != current_tags.get(pk, set())
        if not diff and not tags_differ:
            result.unchanged += 1
        elif not update:
            result.skipped += 1
        else:
            result.updated += 1
            changed.append((pk, diff, row_tags if tags_differ else None))
    if progress:
        progress("writing", 0, len(new_pvs) + len(changed))
    copy_pvs(new_pvs)
    copy_links(new_links)
    result.created = len(new_pvs)
    _apply_updates(changed, file_groups, now)
    analyze_if_bulk(len(new_pvs) + len(changed))
    if result.created or result.updated:
        catalog_changed()
    if progress:
        progress("writing", len(new_pvs) + len(changed), len(new_pvs) + len(changed))


def _missing_tag_errors(
    rows: Sequence[CsvRow],
    columns: Sequence[str],
    known: dict[tuple[str, str], uuid.UUID],
    known_groups: set[str],
) -> str:
    errors: list[str] = []
    for index, column in enumerate(columns):
        if column not in STANDARD_COLUMNS and column.lower() not in known_groups:
            errors.append(
                f"line 1, column {index + 1} ({column}): unknown tag group '{column}' "
                "(import without --no-create-tags to create it)"
            )
    reported: set[tuple[str, str]] = set()
    for row in rows:
        for group, names in row.tags.items():
            if group.lower() not in known_groups:
                continue
            for name in names:
                if (group, name) in known or (group, name) in reported:
                    continue
                reported.add((group, name))
                errors.append(
                    f"line {row.line}, column {columns.index(group) + 1} ({group}): "
                    f"unknown tag '{name}' in group '{group}'"
                )
    return "\n".join(errors[:50])


def _existing_by_identity() -> dict[tuple[str, str], tuple[uuid.UUID, dict[str, Any]]]:
    fields = ("id", "setpoint_address", *UPDATABLE.values())
    out: dict[tuple[str, str], tuple[uuid.UUID, dict[str, Any]]] = {}
    for values in PV.objects.order_by("created_at", "id").values(*fields).iterator(5000):
        ident = identity(
            values["setpoint_address"], values["readback_address"], values["config_address"]
        )
        out.setdefault(ident, (values["id"], values))
    return out


def _tags_in_groups(group_ids: set[uuid.UUID]) -> dict[uuid.UUID, set[uuid.UUID]]:
    out: dict[uuid.UUID, set[uuid.UUID]] = {}
    rows = PV.tags.through.objects.filter(tag__group_id__in=group_ids).values_list(
        "pv_id", "tag_id"
    )
    for pv_id, tag_id in rows.iterator(10_000):
        out.setdefault(pv_id, set()).add(tag_id)
    return out


def _apply_updates(
    changed: list[tuple[uuid.UUID, dict[str, Any], set[uuid.UUID] | None]],
    file_groups: set[uuid.UUID],
    now: datetime,
) -> None:
    """Overwrite changed fields and replace tags of the file's groups, in bulk."""
    by_fields: dict[tuple[str, ...], list[PV]] = {}
    for pk, diff, _ in changed:
        pv = PV(id=pk, updated_at=now, **diff)
        by_fields.setdefault(tuple(sorted(diff)), []).append(pv)
    for names, pvs in by_fields.items():
        PV.objects.bulk_update(pvs, [*names, "updated_at"], batch_size=1000)
    retag = [(pk, tags) for pk, _, tags in changed if tags is not None]
    if not retag:
        return
    ids = [pk for pk, _ in retag]
    for start in range(0, len(ids), 5000):
        PV.tags.through.objects.filter(
            pv_id__in=ids[start : start + 5000], tag__group_id__in=file_groups
        ).delete()
    copy_links((pk, t) for pk, tags in retag for t in sorted(tags))


def pv_export_rows(*, progress: Progress | None = None) -> tuple[list[str], list[list[str]]]:
    """The whole catalog as CSV header and rows (tag groups as columns), import's format."""
    groups = list(TagGroup.objects.order_by("name").values_list("pk", "name"))
    header = export_header([name for _, name in groups])
    tags: dict[uuid.UUID, dict[uuid.UUID, list[str]]] = {}
    links = PV.tags.through.objects.order_by("tag__name").values_list(
        "pv_id", "tag__group_id", "tag__name"
    )
    for pv_id, group_id, name in links.iterator(10_000):
        tags.setdefault(pv_id, {}).setdefault(group_id, []).append(name)
    fields = ("id", *CATALOG_FIELDS)
    qs = PV.objects.order_by("setpoint_address", "readback_address", "config_address", "id")
    rows = []
    total = qs.count()
    for done, values in enumerate(qs.values(*fields).iterator(5000), 1):
        pv_tags = tags.get(values["id"], {})
        rows.append(export_row(values, [pv_tags.get(gid, []) for gid, _ in groups]))
        if progress and done % 5000 == 0:
            progress("exporting", done, total)
    return header, rows
