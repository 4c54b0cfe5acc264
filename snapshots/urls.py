"""Routes of the snapshots app under /v1 (no trailing slashes, contract §1.2)."""

app_name = "snapshots"

urlpatterns: list = []
