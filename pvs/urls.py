"""Routes of the pvs app under /v1 (no trailing slashes, contract §1.2).

Static sub-paths come before ``pvs/<pv_id>``; monitor's /v1/pvs/live* routes are included
before this module in squirrel/urls.py.
"""

from django.urls import path

from pvs import views

app_name = "pvs"

urlpatterns = [
    path("pvs", views.PVListView.as_view(), name="list"),
    path("pvs/paged", views.PVPagedView.as_view(), name="paged"),
    path("pvs/search", views.PVSearchView.as_view(), name="search"),
    path("pvs/devices", views.PVDevicesView.as_view(), name="devices"),
    path("pvs/multi", views.PVMultiView.as_view(), name="multi"),
    path("pvs/restore-policy", views.PVRestorePolicyView.as_view(), name="restore-policy"),
    path("pvs/<str:pv_id>", views.PVDetailView.as_view(), name="detail"),
]
