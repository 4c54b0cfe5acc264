"""API-key routes under /v1 (contract §2.7)."""

app_name = "apikeys"

urlpatterns: list = []
