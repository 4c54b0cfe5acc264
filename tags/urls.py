"""Routes of the tags app under /v1 (no trailing slashes, contract §1.2)."""

from django.urls import path

from tags import views

app_name = "tags"

urlpatterns = [
    path("tags", views.TagGroupListView.as_view(), name="group-list"),
    path("tags/bulk", views.TagBulkView.as_view(), name="bulk"),
    path("tags/<str:group_id>", views.TagGroupDetailView.as_view(), name="group-detail"),
    path("tags/<str:group_id>/tags", views.TagListView.as_view(), name="tag-list"),
    path("tags/<str:group_id>/tags/<str:tag_id>", views.TagDetailView.as_view(), name="tag-detail"),
]
