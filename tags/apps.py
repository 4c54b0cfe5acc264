from django.apps import AppConfig


class TagsConfig(AppConfig):
    name = "tags"

    def ready(self) -> None:
        from squirrel import hooks
        from tags.models import Tag

        hooks.tag_ids_finder_set(
            lambda ids: set(Tag.objects.filter(pk__in=ids).values_list("pk", flat=True))
        )
