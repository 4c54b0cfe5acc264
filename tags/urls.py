"""Routes of the tags app under /v1 (no trailing slashes, contract §1.2)."""

app_name = "tags"

urlpatterns: list = []
