"""Every write to the PV catalog (contract §2.3) and the bulk writers the importer shares.

Each catalog change sends ``pvs.hooks.catalog_changed`` after commit, so the monitor reloads.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from pvs import hooks
from pvs.models import PV
from squirrel.exceptions import Conflict, NotFound
from tags.models import Tag

log = logging.getLogger(__name__)

ANALYZE_AFTER = 1000
EMPTY_ADDRESS = "At least one address (setpoint, readback, or config) is required"


def _announce() -> None:
    hooks.catalog_changed.send(sender=PV)


def catalog_changed() -> None:
    """Tell the layers above (the monitor reloads) that the catalog changed, once the current
    transaction commits."""
    transaction.on_commit(_announce)


def _clean_address(value: str | None) -> str | None:
    """The one address normalisation: trimmed, blank means none."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def _uuid(value: uuid.UUID | str) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None


def pv_live_values(*, addresses: Sequence[str | None]) -> tuple[dict[str, Any], str | None]:
    """Cached live values of these addresses (uncached ones left out), and an error text
    instead when the cache cannot be read."""
    return hooks.live_values_read([a for a in addresses if a])


def pv_get(*, pv_id: uuid.UUID | str, for_update: bool = False) -> PV:
    """The PV, or NotFound (a malformed id is not found either)."""
    pk = _uuid(pv_id)
    qs = PV.objects.select_for_update() if for_update else PV.objects
    pv = qs.filter(pk=pk).first() if pk else None
    if pv is None:
        raise NotFound(f"PV {pv_id} not found")
    return pv


@dataclass
class NewPV:
    """One PV to create, as the API and the importer describe it."""

    setpoint_address: str | None = None
    readback_address: str | None = None
    config_address: str | None = None
    device: str | None = None
    description: str | None = None
    abs_tolerance: float = 0.0
    rel_tolerance: float = 0.0
    read_only: bool = False
    tag_ids: list[uuid.UUID] = field(default_factory=list)


@transaction.atomic
def pv_create(
    *,
    setpoint_address: str | None = None,
    readback_address: str | None = None,
    config_address: str | None = None,
    device: str | None = None,
    description: str | None = None,
    abs_tolerance: float = 0.0,
    rel_tolerance: float = 0.0,
    read_only: bool = False,
    tag_ids: Sequence[uuid.UUID] = (),
) -> PV:
    """Create one PV; 409 on an empty or duplicate setpoint or an unknown tag id."""
    sp, rb, cfg = (_clean_address(a) for a in (setpoint_address, readback_address, config_address))
    if not (sp or rb or cfg):
        raise Conflict(EMPTY_ADDRESS)
    if sp and PV.objects.filter(setpoint_address=sp).exists():
        raise Conflict(f"PV with setpoint address '{sp}' already exists")
    wanted = set(tag_ids)
    tags = list(Tag.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    if len(tags) != len(wanted):
        raise Conflict("One or more tag IDs are invalid")
    pv = PV(
        setpoint_address=sp,
        readback_address=rb,
        config_address=cfg,
        device=device,
        description=description,
        abs_tolerance=abs_tolerance,
        rel_tolerance=rel_tolerance,
        read_only=read_only,
    )
    pv.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            pv.save(force_insert=True)
    except IntegrityError as exc:
        message = f"PV addresses violate uniqueness constraints: {exc}".splitlines()[0]
        raise Conflict(message) from None
    # django-stubs only allows int raw pks in related-manager sets; Tag pks are UUIDs
    pv.tags.set(cast("list[Any]", tags))
    catalog_changed()
    return pv


def _some(values: Iterable[str]) -> list[str]:
    return sorted(values)[:10]


@transaction.atomic
def pv_create_many(*, items: Sequence[NewPV]) -> list[PV]:
    """Create many PVs, all or nothing; unknown tag ids are dropped (contract §2.3 multi)."""
    pvs: list[PV] = []
    links: list[tuple[int, uuid.UUID]] = []
    known_tags = set(
        Tag.objects.filter(pk__in={t for item in items for t in item.tag_ids}).values_list(
            "pk", flat=True
        )
    )
    seen: set[str] = set()
    duplicates: set[str] = set()
    now = timezone.now()
    for index, item in enumerate(items):
        sp, rb, cfg = (
            _clean_address(a)
            for a in (item.setpoint_address, item.readback_address, item.config_address)
        )
        if not (sp or rb or cfg):
            raise Conflict(EMPTY_ADDRESS)
        if sp:
            if sp in seen:
                duplicates.add(sp)
            seen.add(sp)
        pvs.append(
            PV(
                id=uuid.uuid4(),
                setpoint_address=sp,
                readback_address=rb,
                config_address=cfg,
                device=item.device,
                description=item.description,
                abs_tolerance=item.abs_tolerance,
                rel_tolerance=item.rel_tolerance,
                read_only=item.read_only,
                created_at=now,
                updated_at=now,
            )
        )
        links.extend((index, t) for t in dict.fromkeys(item.tag_ids) if t in known_tags)
    if duplicates:
        raise Conflict(f"Duplicate setpoint addresses in import: {_some(duplicates)}")
    existing = _existing_setpoints(seen)
    if existing:
        raise Conflict(f"Setpoint addresses already exist: {_some(existing)}")
    if not pvs:
        return []
    copy_pvs([getattr(pv, c) for c in COPY_COLUMNS] for pv in pvs)
    copy_links([(pvs[i].pk, t) for i, t in links])
    analyze_if_bulk(len(pvs))
    catalog_changed()
    return pvs


def _existing_setpoints(addresses: set[str]) -> set[str]:
    found: set[str] = set()
    items = list(addresses)
    for start in range(0, len(items), 10_000):
        rows = PV.objects.filter(setpoint_address__in=items[start : start + 10_000]).values_list(
            "setpoint_address", flat=True
        )
        # the stubs type the nullable column as str | None; an __in match is never NULL
        found.update(cast("Iterable[str]", rows))
    return found


@transaction.atomic
def pv_update(
    *,
    pv_id: uuid.UUID | str,
    description: str | None = None,
    abs_tolerance: float | None = None,
    rel_tolerance: float | None = None,
    read_only: bool | None = None,
    tag_ids: Sequence[uuid.UUID] | None = None,
) -> PV:
    """Change what may change; ``None`` leaves a field as it is, ``tag_ids`` replaces the set
    (unknown ids dropped). Addresses and device never change here."""
    pv = pv_get(pv_id=pv_id, for_update=True)
    for name, value in (
        ("description", description),
        ("abs_tolerance", abs_tolerance),
        ("rel_tolerance", rel_tolerance),
        ("read_only", read_only),
    ):
        if value is not None:
            setattr(pv, name, value)
    pv.full_clean(validate_unique=False, validate_constraints=False)
    pv.save()
    if tag_ids is not None:
        known = Tag.objects.filter(pk__in=set(tag_ids)).values_list("pk", flat=True)
        # django-stubs only allows int raw pks in related-manager sets; Tag pks are UUIDs
        pv.tags.set(cast("Iterable[Any]", known))
    catalog_changed()
    return pv


@transaction.atomic
def pv_delete(*, pv_id: uuid.UUID | str) -> None:
    """Delete a PV; its saved snapshot values stay (their pv becomes null)."""
    pv_get(pv_id=pv_id, for_update=True).delete()
    catalog_changed()


@transaction.atomic
def pv_set_read_only(*, pv_ids: Sequence[uuid.UUID], read_only: bool) -> int:
    """Mark many PVs read-only or writable; returns how many rows changed."""
    count = (
        PV.objects.filter(pk__in=pv_ids)
        .exclude(read_only=read_only)
        .update(read_only=read_only, updated_at=timezone.now())
    )
    catalog_changed()
    return count


@transaction.atomic
def pv_tag_add(*, pv_ids: Sequence[uuid.UUID], tag: Tag) -> int:
    """Attach a tag to many PVs; returns how many links were added."""
    through = PV.tags.through
    have = set(through.objects.filter(tag=tag, pv_id__in=pv_ids).values_list("pv_id", flat=True))
    new = [through(pv_id=p, tag_id=tag.pk) for p in pv_ids if p not in have]
    through.objects.bulk_create(new, batch_size=5000)
    catalog_changed()
    return len(new)


@transaction.atomic
def pv_tag_remove(*, pv_ids: Sequence[uuid.UUID], tag: Tag) -> int:
    """Detach a tag from many PVs; returns how many links were removed."""
    count, _ = PV.tags.through.objects.filter(tag=tag, pv_id__in=pv_ids).delete()
    catalog_changed()
    return count


# --- bulk writes with COPY -----------------------------------------------------------------


def analyze_if_bulk(count: int) -> None:
    """After a bulk write: fresh planner statistics (without them PostgreSQL sorts the whole
    table to serve one page: 15 ms instead of 1 ms at 50K rows), and the trigram indexes'
    pending lists merged (until then the planner avoids them: name search 40 ms, not 2 ms)."""
    if count < ANALYZE_AFTER:
        return
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pv; ANALYZE pv_tag")
        cursor.execute(
            "SELECT gin_clean_pending_list(i.indexrelid::regclass) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
            "WHERE i.indrelid = 'pv'::regclass AND a.amname = 'gin'"
        )


COPY_COLUMNS = (
    "id",
    "created_at",
    "updated_at",
    "setpoint_address",
    "readback_address",
    "config_address",
    "device",
    "description",
    "abs_tolerance",
    "rel_tolerance",
    "read_only",
)


def copy_pvs(rows: Iterable[Sequence[Any]]) -> None:
    """COPY rows (values in ``COPY_COLUMNS`` order) into the pv table."""
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY pv ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def copy_links(links: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> None:
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy("COPY pv_tag (pv_id, tag_id) FROM STDIN") as copy,
    ):
        for link in links:
            copy.write_row(link)
