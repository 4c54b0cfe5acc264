"""Root URLs: the contract's /v1 routes (each app's urls), docs, admin, live pages."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from squirrel import views

urlpatterns = [
    path("", views.root, name="root"),
    path("health", views.health, name="health"),
    path("admin/", admin.site.urls),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("v1/", include("squirrel.api_urls")),
    # live first: its /v1/pvs/live* routes must win over /v1/pvs/<id>.
    path("v1/", include("live.urls")),
    path("v1/", include("pvs.urls")),
    path("v1/", include("tags.urls")),
    path("v1/", include("snapshots.urls")),
    path("v1/", include("jobs.urls")),
    path("", include("live.page_urls")),
]

handler404 = "squirrel.views.not_found"
handler500 = "squirrel.views.server_error"
