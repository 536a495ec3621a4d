from __future__ import annotations

from django.contrib import admin
from django.urls import path, re_path
from django.views.generic import RedirectView

from ops.cron import views as cron

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/cron/drain-queues", cron.drain_queues, name="cron-drain-queues"),
    path("api/v1/cron/status", cron.status, name="cron-status"),
    path("api/v1/cron/prune", cron.prune, name="cron-prune"),
    # Anything else under the cron prefix answers JSON, never an HTML 404.
    re_path(r"^api/v1/cron(?P<rest>/.*)?$", cron.not_found),
]
