"""Live-value pages served by Django (outside /v1)."""

app_name = "pages"

urlpatterns: list = []
