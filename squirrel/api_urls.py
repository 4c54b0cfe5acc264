"""API-key routes under /v1 (contract §2.7); ``api-keys/count`` before ``api-keys/<id>``; the
audit trail (``/v1/audit``)."""

from django.urls import path

from squirrel import apikey_views as views
from squirrel import audit_views

app_name = "apikeys"

urlpatterns = [
    path("api-keys", views.ApiKeyListView.as_view(), name="list"),
    path("api-keys/count", views.ApiKeyCountView.as_view(), name="count"),
    path("api-keys/<str:key_id>", views.ApiKeyDetailView.as_view(), name="detail"),
    path("audit", audit_views.AuditListView.as_view(), name="audit"),
]
