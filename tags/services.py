"""Every write to tag groups and tags (contract §2.5). Names are unique case-insensitively."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.db import transaction

from squirrel import audit
from squirrel.exceptions import Conflict, NotFound
from tags.models import Tag, TagGroup


@dataclass
class BulkResult:
    """What ``tags_bulk_create`` did (contract §2.5 ``POST /v1/tags/bulk``)."""

    groups_created: int = 0
    tags_created: int = 0
    tags_skipped: int = 0
    warnings: list[str] = field(default_factory=list)


def tag_group_get(*, group_id: uuid.UUID | str) -> TagGroup:
    """The group, or NotFound (a malformed id is not found either)."""
    try:
        return TagGroup.objects.get(pk=uuid.UUID(str(group_id)))
    except (ValueError, TagGroup.DoesNotExist):
        raise NotFound(f"Tag group {group_id} not found") from None


def _tag_get(*, group_id: uuid.UUID | str, tag_id: uuid.UUID | str) -> Tag:
    try:
        return Tag.objects.select_for_update().get(
            pk=uuid.UUID(str(tag_id)), group_id=uuid.UUID(str(group_id))
        )
    except (ValueError, Tag.DoesNotExist):
        raise NotFound(f"Tag {tag_id} not found in group {group_id}") from None


def _actor(actor: str | None) -> str:
    return actor or audit.system("internal")


def _fields(obj: TagGroup | Tag) -> dict[str, str | None]:
    return {"name": obj.name, "description": obj.description}


def _check_group_name(name: str, *, exclude: uuid.UUID | None = None) -> None:
    qs = TagGroup.objects.filter(name__iexact=name)
    if exclude is not None:
        qs = qs.exclude(pk=exclude)
    if qs.exists():
        raise Conflict(f"Tag group with name '{name}' already exists")


def _check_tag_name(group: TagGroup, name: str, *, exclude: uuid.UUID | None = None) -> None:
    qs = Tag.objects.filter(group=group, name__iexact=name)
    if exclude is not None:
        qs = qs.exclude(pk=exclude)
    if qs.exists():
        raise Conflict(f"Tag '{name}' already exists in this group")


@transaction.atomic
def tag_group_create(
    *, name: str, description: str | None = None, actor: str | None = None
) -> TagGroup:
    """Create an empty group; 409 when the name exists in any case."""
    _check_group_name(name)
    group = TagGroup(name=name, description=description)
    group.full_clean(validate_unique=False)
    group.save()
    audit.record(_actor(actor), "taggroup.create", group, summary=name, after=_fields(group))
    return group


@transaction.atomic
def tag_group_update(
    *,
    group_id: uuid.UUID | str,
    name: str | None = None,
    description: str | None = None,
    actor: str | None = None,
) -> TagGroup:
    """Rename and/or describe a group; ``None`` leaves a field unchanged."""
    group = tag_group_get(group_id=group_id)
    old = _fields(group)
    if name is not None and name != group.name:
        _check_group_name(name, exclude=group.pk)
        group.name = name
    if description is not None:
        group.description = description
    group.full_clean(validate_unique=False)
    group.save()
    before, after = audit.changes(old, _fields(group))
    audit.record(
        _actor(actor), "taggroup.update", group, summary=group.name, before=before, after=after
    )
    return group


@transaction.atomic
def tag_group_delete(*, group_id: uuid.UUID | str, actor: str | None = None) -> None:
    """Delete a group, its tags and their PV links (cascade)."""
    group = tag_group_get(group_id=group_id)
    audit.record(
        _actor(actor),
        "taggroup.delete",
        group,
        summary=group.name,
        before={**_fields(group), "tags": sorted(group.tags.values_list("name", flat=True))},
    )
    group.delete()


@transaction.atomic
def tag_create(
    *,
    group_id: uuid.UUID | str,
    name: str,
    description: str | None = None,
    skip_duplicates: bool = False,
    actor: str | None = None,
) -> tuple[TagGroup, bool]:
    """Add a tag to a group; returns (group, was_created). 409 on a duplicate name unless
    ``skip_duplicates``."""
    group = tag_group_get(group_id=group_id)
    if skip_duplicates and Tag.objects.filter(group=group, name__iexact=name).exists():
        return group, False
    _check_tag_name(group, name)
    tag = Tag(group=group, name=name, description=description)
    tag.full_clean(validate_unique=False)
    tag.save()
    audit.record(
        _actor(actor), "tag.create", tag, summary=f"{group.name}: {name}", after=_fields(tag)
    )
    group.updated_at = tag.created_at
    TagGroup.objects.filter(pk=group.pk).update(updated_at=group.updated_at)
    return group, True


@transaction.atomic
def tag_update(
    *,
    group_id: uuid.UUID | str,
    tag_id: uuid.UUID | str,
    name: str | None = None,
    description: str | None = None,
    actor: str | None = None,
) -> TagGroup:
    """Rename and/or describe a tag; ``None`` leaves a field unchanged. Returns the group."""
    tag = _tag_get(group_id=group_id, tag_id=tag_id)
    old = _fields(tag)
    if name is not None and name != tag.name:
        _check_tag_name(tag.group, name, exclude=tag.pk)
        tag.name = name
    if description is not None:
        tag.description = description
    tag.full_clean(validate_unique=False)
    tag.save()
    before, after = audit.changes(old, _fields(tag))
    audit.record(_actor(actor), "tag.update", tag, summary=tag.name, before=before, after=after)
    return tag.group


@transaction.atomic
def tag_delete(
    *, group_id: uuid.UUID | str, tag_id: uuid.UUID | str, actor: str | None = None
) -> TagGroup:
    """Delete a tag (and its PV links). Returns the group."""
    tag = _tag_get(group_id=group_id, tag_id=tag_id)
    group = tag.group
    audit.record(
        _actor(actor),
        "tag.delete",
        tag,
        summary=f"{group.name}: {tag.name}",
        before={**_fields(tag), "pvs": tag.pvs.count()},
    )
    tag.delete()
    return group


@transaction.atomic
def tags_bulk_create(*, groups: dict[str, list[str]], actor: str | None = None) -> BulkResult:
    """Create missing groups and tags by name; existing tags are skipped with a warning."""
    result = BulkResult()
    for group_name, tag_names in groups.items():
        group = TagGroup.objects.filter(name__iexact=group_name).first()
        if group is None:
            group = TagGroup.objects.create(name=group_name)
            result.groups_created += 1
        existing = {
            n.lower() for n in Tag.objects.filter(group=group).values_list("name", flat=True)
        }
        new: list[Tag] = []
        for tag_name in tag_names:
            if tag_name.lower() in existing:
                result.tags_skipped += 1
                result.warnings.append(f"Tag '{tag_name}' already exists in group '{group.name}'")
                continue
            existing.add(tag_name.lower())
            new.append(Tag(group=group, name=tag_name))
        Tag.objects.bulk_create(new)
        result.tags_created += len(new)
    audit.record(
        _actor(actor),
        "tag.create_many",
        summary=f"{result.groups_created} groups, {result.tags_created} tags created",
        detail={
            "groupsCreated": result.groups_created,
            "tagsCreated": result.tags_created,
            "tagsSkipped": result.tags_skipped,
        },
    )
    return result


def tags_resolve(
    *, names: dict[str, set[str]], create: bool
) -> tuple[dict[tuple[str, str], uuid.UUID], list[str]]:
    """Map (group name, tag name) pairs to tag ids, matching names case-insensitively.

    With ``create``, missing groups and tags are created (call inside the caller's
    transaction); without, the missing ones are returned as messages instead.
    Keys of the returned map are the names exactly as given.
    """
    ids: dict[tuple[str, str], uuid.UUID] = {}
    missing: list[str] = []
    groups = {g.name.lower(): g for g in TagGroup.objects.all()}
    tags: dict[tuple[uuid.UUID, str], uuid.UUID] = {
        (group_id, name.lower()): tag_id
        for tag_id, group_id, name in Tag.objects.values_list("id", "group_id", "name")
    }
    for group_name, tag_names in names.items():
        group = groups.get(group_name.lower())
        if group is None:
            if not create:
                missing.append(f"unknown tag group '{group_name}'")
                continue
            group = TagGroup.objects.create(name=group_name)
            groups[group_name.lower()] = group
        for tag_name in sorted(tag_names):
            tag_id = tags.get((group.pk, tag_name.lower()))
            if tag_id is None:
                if not create:
                    missing.append(f"unknown tag '{tag_name}' in group '{group.name}'")
                    continue
                tag_id = Tag.objects.create(group=group, name=tag_name).pk
                tags[(group.pk, tag_name.lower())] = tag_id
            ids[(group_name, tag_name)] = tag_id
    return ids, missing
