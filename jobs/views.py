"""GET /v1/jobs/{id} (contract §2.6): polled every second by the frontend while a job runs."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import services
from jobs.serializers import JobOutSerializer, job_dto


class JobDetailView(APIView):
    """GET: the JobDTO; 404 for an unknown or malformed id."""

    @extend_schema(responses=JobOutSerializer)
    def get(self, request: Request, job_id: str) -> Response:
        return Response(job_dto(services.job_get_current(job_id=job_id)))
