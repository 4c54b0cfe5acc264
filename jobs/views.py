"""GET /v1/jobs/{id} (contract §2.6): polled every second by the frontend while a job runs."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import services
from jobs.models import Job
from jobs.serializers import JobOutSerializer, job_dto


class JobDetailView(APIView):
    """GET: the JobDTO; 404 for an unknown or malformed id."""

    @extend_schema(responses=JobOutSerializer)
    def get(self, request: Request, job_id: str) -> Response:
        job = services.job_get(job_id=job_id)
        if job.type == Job.Type.SNAPSHOT_RESTORE and job.status == Job.Status.RUNNING:
            # A restore whose worker died is never retried, so nothing else would end its
            # job: the poll that watches it fails it once the heartbeat is stale.
            from snapshots.restore.run import restore_reap_orphans  # snapshots depends on jobs

            if restore_reap_orphans():
                job = services.job_get(job_id=job_id)
        return Response(job_dto(job))
