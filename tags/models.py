"""Tag groups and their tags (contract §3.1, §3.2)."""

from __future__ import annotations

from django.db import models

from squirrel.models import BaseModel


class TagGroup(BaseModel):
    """A named set of tags, e.g. "Area" with "LI22", "BSY"."""

    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "tag_group"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Tag(BaseModel):
    """One tag inside a group; names are unique per group, case-insensitively (API rule)."""

    name = models.CharField(max_length=255)
    description = models.TextField(null=True, blank=True)
    group = models.ForeignKey(TagGroup, on_delete=models.CASCADE, related_name="tags")

    class Meta:
        db_table = "tag"
        ordering = ["name", "created_at"]

    def __str__(self) -> str:
        return f"{self.group.name}: {self.name}" if self.group_id else self.name
