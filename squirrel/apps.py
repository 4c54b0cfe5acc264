from django.apps import AppConfig


class SquirrelConfig(AppConfig):
    name = "squirrel"
    verbose_name = "Squirrel access"
