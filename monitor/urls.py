"""Routes of the monitor app under /v1 (no trailing slashes, contract §1.2)."""

app_name = "monitor"

urlpatterns: list = []
