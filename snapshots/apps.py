from django.apps import AppConfig


class SnapshotsConfig(AppConfig):
    name = "snapshots"

    def ready(self) -> None:
        """A capture or restore whose worker died is failed by the job poll that watches it,
        through these reapers (jobs may not import snapshots: STYLE.md §2)."""
        from jobs.models import Job  # models are loaded only now
        from jobs.services import job_reaper_register
        from snapshots.capture import capture_reap_orphans
        from snapshots.restore.run import restore_reap_orphans

        job_reaper_register(type=Job.Type.SNAPSHOT_CREATE, reaper=capture_reap_orphans)
        job_reaper_register(type=Job.Type.SNAPSHOT_RESTORE, reaper=restore_reap_orphans)
