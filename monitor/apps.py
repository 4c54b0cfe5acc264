from django.apps import AppConfig


class MonitorConfig(AppConfig):
    name = "monitor"

    def ready(self) -> None:
        """Answer the catalog's hooks (pvs may not import monitor: STYLE.md §2)."""
        from monitor import services  # models are loaded only now
        from pvs import hooks

        hooks.catalog_changed.connect(
            services.catalog_version_bump, dispatch_uid="monitor.catalog_version_bump"
        )
        hooks.live_values_reader_set(services.live_values_wire)
