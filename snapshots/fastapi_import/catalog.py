"""Phase "catalog": tag groups, tags, PVs and their tag links, every id kept.

1. A source row whose id exists here is *unchanged* when its fields (and, for a PV, its tag
   set) are equal, else *differing*: left alone, or with ``update`` overwritten by the source.
2. A source row whose id is new is created with its id, ``created_at`` and ``updated_at``.
3. Conflicts, reported by object (the phase then writes nothing): a tag group name (in any
   case) held here by another id; a tag name within its group likewise; a PV whose identity
   address (setpoint, else readback, else config: ``pvs.csvio.identity``, the CSV import's
   rule) belongs to another PV here. Addresses are kept verbatim, ``ca://``/``pva://``
   prefixes included.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from pvs.csvio import identity
from pvs.models import PV
from pvs.services.catalog import COPY_COLUMNS as PV_COLUMNS
from pvs.services.catalog import analyze_if_bulk, catalog_changed, copy_links, copy_pvs
from snapshots.fastapi_import.report import PhaseReport, Progress
from snapshots.fastapi_import.source import Source
from snapshots.fastapi_import.target import copy_rows, update_rows
from tags.models import Tag, TagGroup

# setpoint .. read_only: what the FastAPI Squirrel has, and what is compared and refreshed
PV_FIELDS = PV_COLUMNS[3 : PV_COLUMNS.index("read_only") + 1]
# ours only (restore policy, issue 18): a new PV takes the defaults, an updated one keeps its own
PV_DEFAULTS = (0, None)
assert PV_COLUMNS[len(PV_FIELDS) + 3 :] == ("restore_stage", "completion_timeout")
_PV_SQL = f"SELECT id, created_at, updated_at, {', '.join(PV_FIELDS)} FROM pv ORDER BY id"


def catalog_import(
    *, source: Source, report: PhaseReport, update: bool, progress: Progress | None = None
) -> None:
    """Import the catalog into ``report``'s counts; writes only when no conflict was found
    (the caller's transaction rolls back on conflicts anyway)."""
    group_plan = _groups(source, report, update)
    tag_plan = _tags(source, report, update)
    pv_plan = _pvs(source, report, update, progress)
    if report.conflicts:
        return
    for table, columns, plan in (group_plan, tag_plan):
        create, changes = plan
        copy_rows(table, ("id", *columns, "created_at", "updated_at"), create)
        update_rows(table, "id", columns, changes, stamp=True)
    pv_plan.write()


# --- tag groups and tags ---------------------------------------------------------------------

Plan = tuple[str, tuple[str, ...], tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]


def _groups(source: Source, report: PhaseReport, update: bool) -> Plan:
    count = report.table("tag_group")
    ours = {g.pk: (g.name, g.description) for g in TagGroup.objects.all()}
    by_name = {name.lower(): pk for pk, (name, _) in ours.items()}
    create: list[tuple[Any, ...]] = []
    changes: list[tuple[Any, ...]] = []
    for gid, name, description, created, updated in source.rows(
        "SELECT id, name, description, created_at, updated_at FROM tag_group ORDER BY name"
    ):
        count.read += 1
        holder = by_name.get(name.lower())
        if holder is not None and holder != gid and (gid not in ours or update):
            report.conflicts.append(
                f"tag group {name!r} ({gid}): the name is taken here by tag group {holder}"
            )
            continue
        if gid in ours:
            if ours[gid] == (name, description):
                count.unchanged += 1
            elif update:
                count.updated += 1
                changes.append((gid, name, description))
                by_name[name.lower()] = gid
            else:
                count.differing += 1
            continue
        count.created += 1
        by_name[name.lower()] = gid
        create.append((gid, name, description, created, updated))
    return "tag_group", ("name", "description"), (create, changes)


def _tags(source: Source, report: PhaseReport, update: bool) -> Plan:
    count = report.table("tag")
    ours = {t.pk: (t.name, t.description, t.group_id) for t in Tag.objects.all()}
    by_name = {(group, name.lower()): pk for pk, (name, _, group) in ours.items()}
    create: list[tuple[Any, ...]] = []
    changes: list[tuple[Any, ...]] = []
    for tid, name, description, group, created, updated in source.rows(
        "SELECT id, name, description, group_id, created_at, updated_at FROM tag ORDER BY name"
    ):
        count.read += 1
        key = (group, name.lower())
        holder = by_name.get(key)
        if holder is not None and holder != tid and (tid not in ours or update):
            report.conflicts.append(
                f"tag {name!r} ({tid}) of group {group}: the name is taken in that group here "
                f"by tag {holder}"
            )
            continue
        if tid in ours:
            if ours[tid] == (name, description, group):
                count.unchanged += 1
            elif update:
                count.updated += 1
                changes.append((tid, name, description, group))
                by_name[key] = tid
            else:
                count.differing += 1
            continue
        count.created += 1
        by_name[key] = tid
        create.append((tid, name, description, group, created, updated))
    return "tag", ("name", "description", "group_id"), (create, changes)


# --- PVs and their tag links -----------------------------------------------------------------


class _PVPlan:
    """What the PV step will write once the whole phase is known to be free of conflicts."""

    def __init__(self, report: PhaseReport) -> None:
        self.report = report
        self.create: list[tuple[Any, ...]] = []  # rows in pvs' COPY_COLUMNS order
        self.changes: list[tuple[Any, ...]] = []  # (id, *PV_FIELDS)
        self.links: list[tuple[uuid.UUID, uuid.UUID]] = []  # new links
        self.relink: set[uuid.UUID] = set()  # updated PVs whose links are replaced

    def write(self) -> None:
        copy_pvs(self.create)
        update_rows("pv", "id", PV_FIELDS, self.changes, stamp=True)
        if self.relink:
            ids = list(self.relink)
            through = PV.tags.through
            for start in range(0, len(ids), 10_000):
                through.objects.filter(pv_id__in=ids[start : start + 10_000]).delete()
        copy_links(self.links)
        written = len(self.create) + len(self.changes)
        analyze_if_bulk(max(written, len(self.links)))
        if written or self.links:
            catalog_changed()


def _pvs(source: Source, report: PhaseReport, update: bool, progress: Progress | None) -> _PVPlan:
    count = report.table("pv")
    link_count = report.table("pv_tag")
    plan = _PVPlan(report)
    ours: dict[uuid.UUID, tuple[Any, ...]] = {
        row[0]: tuple(row[1:]) for row in PV.objects.values_list("id", *PV_FIELDS).iterator()
    }
    holders = {identity(*row[:3]): pk for pk, row in ours.items()}
    our_links: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for pv_id, tag_id in PV.tags.through.objects.values_list("pv_id", "tag_id").iterator():
        our_links[pv_id].add(tag_id)
    src_links: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for pv_id, tag_id in source.rows("SELECT pv_id, tag_id FROM pv_tag"):
        src_links[pv_id].add(tag_id)
        link_count.read += 1
    total = source.count("pv")
    for done, row in enumerate(source.stream(_PV_SQL), 1):
        pid, created, updated, *fields_list = row
        fields = tuple(fields_list)
        count.read += 1
        tags = src_links.get(pid, set())
        holder = holders.get(identity(*fields[:3]))
        if holder is not None and holder != pid:
            address = identity(*fields[:3])[1]
            report.conflicts.append(
                f"pv {address!r} ({pid}): the address belongs here to another PV, {holder}"
            )
        elif pid not in ours:
            count.created += 1
            link_count.created += len(tags)
            plan.create.append((pid, created, updated, *fields, *PV_DEFAULTS))
            plan.links.extend((pid, t) for t in tags)
        else:
            have = our_links.get(pid, set())
            if ours[pid] == fields and have == tags:
                count.unchanged += 1
                link_count.unchanged += len(tags)
            elif not update:
                count.differing += 1
                report.differing_ids.add(pid)
                link_count.unchanged += len(tags & have)
                link_count.differing += len(tags - have)
            else:
                count.updated += 1
                if ours[pid] != fields:
                    plan.changes.append((pid, *fields))
                if have != tags:
                    plan.relink.add(pid)
                    plan.links.extend((pid, t) for t in tags)
                    link_count.created += len(tags - have)
                    link_count.updated += len(have - tags)  # removed: the source has them not
                    link_count.unchanged += len(tags & have)
                else:
                    link_count.unchanged += len(tags)
        if progress is not None:
            progress("pv", done, total)
    return plan
