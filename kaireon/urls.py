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
    # Prometheus metrics: a cron-scope token, or METRICS_ALLOWED_IPS.
    path("api/v1/cron/metrics", cron.metrics, name="cron-metrics"),
    # Anything else under /api answers JSON, never an HTML 404 (DEBUG too).
    re_path(r"^api(?P<rest>/.*)?$", cron.not_found),
]

# Whatever goes wrong under /api/ (an exception, a request Django refuses)
# answers the cron API's JSON error with Cache-Control: no-store; Django's own
# pages elsewhere.
handler400 = cron.bad_request
handler403 = cron.permission_denied
handler404 = cron.page_not_found
handler500 = cron.server_error
