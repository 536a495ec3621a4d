from __future__ import annotations

from django.contrib import admin
from django.urls import path, re_path
from django.views.generic import RedirectView

from ops import api

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/cron/drain-queues", api.drain_queues, name="cron-drain-queues"),
    path("api/v1/cron/status", api.status, name="cron-status"),
    path("api/v1/cron/prune", api.prune, name="cron-prune"),
    # Anything else under the cron prefix answers JSON, never an HTML 404.
    re_path(r"^api/v1/cron(?P<rest>/.*)?$", api.not_found),
]
