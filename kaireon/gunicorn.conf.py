"""gunicorn configuration for the console (`./dev run` passes -c this file)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaireon.settings")

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# The settings load here, in gunicorn's master, before any worker starts: a bad
# value (kaireon/settings.py checks every variable, the cron tokens included)
# stops gunicorn at once with one line naming the variable, as manage.py does,
# instead of workers failing to boot one after another.
try:
    settings.INSTALLED_APPS  # noqa: B018
except ImproperlyConfigured as exc:
    sys.stderr.write(f"Configuration error: {exc}\n")
    sys.exit(os.EX_CONFIG)

bind = os.environ.get("KAIREON_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# A drain runs inside the request. gunicorn must never kill a worker in the
# middle of one (that would leave a job abandoned), so its timeout sits above
# the longest a drain can take: hard cap + job grace + lease margin.
timeout = (
    settings.DRAIN_MAX_DURATION_CAP_MS
    + settings.DRAIN_JOB_GRACE_MS
    + settings.DRAIN_LEASE_MARGIN_MS
) // 1000 + 30
graceful_timeout = timeout
accesslog = "-"
# gunicorn 27 opens a control socket under ~/.gunicorn by default; we never use it.
control_socket_disable = True
