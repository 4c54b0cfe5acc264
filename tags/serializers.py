"""Request shapes of the tags API and the one builder of each tag DTO (contract §2.2)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from rest_framework import serializers

from tags.models import Tag, TagGroup


class TagGroupCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255)
    description = serializers.CharField(allow_null=True, allow_blank=True, required=False)


class TagGroupUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_null=True, required=False)
    description = serializers.CharField(allow_null=True, allow_blank=True, required=False)


class TagCreateSerializer(TagGroupCreateSerializer):
    pass


class TagUpdateSerializer(TagGroupUpdateSerializer):
    pass


class TagCreateQuerySerializer(serializers.Serializer):
    skip_duplicates = serializers.BooleanField(required=False, default=False)


class TagsBulkSerializer(serializers.Serializer):
    groups = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(max_length=255))
    )

    def validate_groups(self, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # Keys escape the child field's checks (blank, length, NUL, which PostgreSQL refuses).
        for name in value:
            if not name.strip() or len(name) > 255 or "\x00" in name:
                raise serializers.ValidationError(f"invalid group name {name!r}")
        return {name.strip(): tags for name, tags in value.items()}


def tag_dto(tag_id: Any, name: str, description: str | None) -> dict[str, Any]:
    """TagDTO: ``{id, name, description}`` (no group id)."""
    return {"id": str(tag_id), "name": name, "description": description}


def tag_group_dto(group: TagGroup) -> dict[str, Any]:
    """TagGroupDTO with its tags ordered by name (one query for the tags)."""
    tags = Tag.objects.filter(group=group).values_list("id", "name", "description")
    return {
        "id": str(group.pk),
        "name": group.name,
        "description": group.description,
        "tags": [tag_dto(*row) for row in tags],
        "createdDate": group.created_at.isoformat(),
        "lastModifiedDate": group.updated_at.isoformat(),
    }


def tag_group_summaries() -> list[dict[str, Any]]:
    """TagGroupSummaryDTO of every group, ordered by name, in one query."""
    rows = (
        TagGroup.objects.annotate(tag_count=Count("tags"))
        .order_by("name")
        .values_list("id", "name", "description", "tag_count")
    )
    return [
        {"id": str(gid), "name": name, "description": desc, "tagCount": count}
        for gid, name, desc, count in rows
    ]


# --- response shapes, for the OpenAPI schema only (the DTO builders above produce them) -----


class TagOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_null=True)


class TagGroupOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_null=True)
    tags = TagOutSerializer(many=True)
    createdDate = serializers.DateTimeField()
    lastModifiedDate = serializers.DateTimeField()


class TagGroupSummaryOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_null=True)
    tagCount = serializers.IntegerField()


class TagsBulkOutSerializer(serializers.Serializer):
    groupsCreated = serializers.IntegerField()
    tagsCreated = serializers.IntegerField()
    tagsSkipped = serializers.IntegerField()
    warnings = serializers.ListField(child=serializers.CharField())
