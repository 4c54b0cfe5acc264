"""Routes of the jobs app under /v1 (no trailing slashes, contract §1.2)."""

from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("jobs/<str:job_id>", views.JobDetailView.as_view(), name="detail"),
]
