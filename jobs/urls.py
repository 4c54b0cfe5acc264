"""Routes of the jobs app under /v1 (no trailing slashes, contract §1.2)."""

app_name = "jobs"

urlpatterns: list = []
