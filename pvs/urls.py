"""Routes of the pvs app under /v1 (no trailing slashes, contract §1.2)."""

app_name = "pvs"

urlpatterns: list = []
