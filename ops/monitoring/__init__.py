"""Monitoring: what the console exposes to a team's monitoring stack.

`metrics` gathers the Prometheus series of GET /api/v1/cron/metrics from the
database only (0 Redis commands per scrape): drain runs, jobs, the drain
duration histogram, Redis commands by source, the quota, the alarm, incidents
and always-on workers (docs/monitoring.md). The view is the cron API's
(ops/cron/views.py); alert channels live in ops/scheduling/.
"""
