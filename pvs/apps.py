from django.apps import AppConfig


class PvsConfig(AppConfig):
    name = "pvs"
    verbose_name = "PVs"
