"""Each history list answers with a fixed number of queries (issue 15): more
rows than a page, so a query per row (N+1) or an extra count would show.

PostgreSQL only: the count the bounded paginator (ops/console/admin/lists.py)
makes, the trigram search and the planner's estimate are PostgreSQL's; CI runs
the suite on PostgreSQL too (DATABASE_URL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ops.console.admin import lists
from ops.models import CommandUsage, DrainRun, JobRecord, Queue, WorkerProcess

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="query counts of the bounded lists are PostgreSQL's "
        "(set DATABASE_URL=postgres://…; CI runs them there)",
    ),
]

ROWS = 130  # more than a page (100)

# Every admin page costs these before its own: the session, the user, and the
# quota banner's (ops/console/context_processors.py) usage sum and open incident.
BASE = 4
# The home page's own queries, and a metrics scrape's (see their tests).
HOME = 19
METRICS = 13


@pytest.fixture
def history() -> dict[str, object]:
    users = [
        get_user_model().objects.create_user(f"operator{i}", password="x")
        for i in range(3)
    ]
    now = timezone.now()
    runs = DrainRun.objects.bulk_create(
        DrainRun(
            trigger="admin" if i % 2 else "cron",
            status="failed" if i % 10 == 0 else "succeeded",
            requested_by=users[i % 3] if i % 2 else None,
            caller=f"cron 10.0.3.{i % 7}",
            started=now - timedelta(minutes=i),
            total_processed=i % 5,
            deadline_hit=i % 9 == 0,
        )
        for i in range(ROWS)
    )
    JobRecord.objects.bulk_create(
        JobRecord(
            job_id=f"job-{i}",
            queue="batch-jobs" if i % 2 else "dsar-jobs",
            status="failed" if i % 4 == 0 else "finished",
            exc_message="card declined" if i % 4 == 0 else "",
            run=runs[i % 10],
            duration_ms=i,
        )
        for i in range(ROWS)
    )
    hour = now.replace(minute=0, second=0, microsecond=0)
    CommandUsage.objects.bulk_create(
        CommandUsage(hour=hour - timedelta(hours=i), source="worker", commands=i)
        for i in range(ROWS)
    )
    WorkerProcess.objects.bulk_create(
        WorkerProcess(
            name=f"w{i}",
            role="dedicated",
            host=f"host{i % 3}",
            pid=i + 1,
            state="stopped",
            queues=["batch-jobs"],
        )
        for i in range(ROWS)
    )
    Queue.objects.get_or_create(name="batch-jobs")
    return {"run": runs[3], "job_id": "job-7"}


def _get(client: Client, url: str, params: dict[str, str]) -> None:
    response = client.get(url, params)
    assert response.status_code == 200, (url, params, response.status_code)


# (list, params, queries after BASE). Each list: the bounded count and the
# page's rows, plus what its filters and header need: the run list's month
# filter (one MIN/MAX), the job list's queue filter (the Queue rows), the
# worker list's mode, double-consumption check and recent hosts. The job
# list reads its page's runs in one more query (a prefetch, not a join). A
# substring search adds the bound of its scope (one index lookup); a search
# with exact fields first asks whether the term is one (one more).
CASES = [
    ("drainrun", {}, 3),
    ("drainrun", {"q": "10.0.3.2"}, 4),
    ("drainrun", {"status__exact": "failed"}, 3),
    ("drainrun", {"o": "4"}, 3),
    ("drainrun", {"o": "-7"}, 3),
    ("drainrun", {"p": "2"}, 3),
    ("drainrun", {"deadline_hit__exact": "1"}, 3),
    ("jobrecord", {}, 4),
    ("jobrecord", {"q": "card declined"}, 6),
    ("jobrecord", {"q": "job-7"}, 5),
    ("jobrecord", {"status__exact": "failed"}, 4),
    ("jobrecord", {"queue": "dsar-jobs"}, 4),
    ("jobrecord", {"p": "2"}, 4),
    ("commandusage", {}, 2),
    ("commandusage", {"source__exact": "worker"}, 2),
    ("workerprocess", {}, 5),
    ("workerprocess", {"q": "host1"}, 6),
    ("workerprocess", {"host": "host1"}, 5),
]


@pytest.mark.parametrize(("model", "params", "own"), CASES)
def test_each_list_page_costs_a_fixed_number_of_queries(
    admin_client: Client,
    history: dict[str, object],
    django_assert_num_queries,
    model: str,
    params: dict[str, str],
    own: int,
) -> None:
    url = reverse(f"admin:ops_{model}_changelist")
    _get(admin_client, url, params)  # warm: the content types, the sessions
    with django_assert_num_queries(BASE + own):
        _get(admin_client, url, params)


def test_the_run_list_costs_the_same_with_three_times_the_rows(
    admin_client: Client, history: dict[str, object], django_assert_num_queries
) -> None:
    url = reverse("admin:ops_drainrun_changelist")
    _get(admin_client, url, {})
    with django_assert_num_queries(BASE + 3):
        _get(admin_client, url, {})
    DrainRun.objects.bulk_create(
        DrainRun(trigger="cron", status="succeeded", caller="x")
        for _ in range(2 * ROWS)
    )
    with django_assert_num_queries(BASE + 3):
        _get(admin_client, url, {})


def test_a_list_longer_than_its_pages_counts_only_up_to_its_cap(
    admin_client: Client, history: dict[str, object], monkeypatch
) -> None:
    monkeypatch.setattr(lists, "MAX_PAGES", 1)  # 100 rows, fewer than ROWS
    html = admin_client.get(reverse("admin:ops_drainrun_changelist")).content.decode()
    assert "the first 100 of" in html
    # Past the last page: the last page, not an error.
    response = admin_client.get(reverse("admin:ops_drainrun_changelist"), {"p": "50"})
    assert response.status_code == 200


def test_a_substring_search_looks_among_the_newest_rows_only(
    admin_client: Client, history: dict[str, object], monkeypatch
) -> None:
    from ops.console.admin.drains import DrainRunAdmin

    url = reverse("admin:ops_drainrun_changelist")
    # The scope runs along the list's order: the start time.
    newest = DrainRun.objects.order_by("-started").first()
    oldest = DrainRun.objects.order_by("started").first()
    assert newest is not None and oldest is not None
    DrainRun.objects.filter(pk=oldest.pk).update(caller="cron 192.0.2.77")
    DrainRun.objects.filter(pk=newest.pk).update(caller="cron 192.0.2.78")
    run_id = str(oldest.public_id)

    def found(term: str) -> set[int]:
        response = admin_client.get(url, {"q": term})
        assert response.status_code == 200
        return {run.pk for run in response.context["cl"].result_list}

    monkeypatch.setattr(DrainRunAdmin, "search_scope", 10)
    # The newest run is in the scope, the oldest is not.
    assert found("192.0.2.7") == {newest.pk}
    # An exact run id is found whatever its age.
    assert found(run_id) == {oldest.pk}

    monkeypatch.setattr(DrainRunAdmin, "search_scope", 100_000)
    assert found("192.0.2.7") == {newest.pk, oldest.pk}


# --- The home page and the metrics endpoint -----------------------------------


def _more_history(rows: int) -> None:
    """More runs, job records, usage rows and workers of the same kinds."""
    now = timezone.now()
    runs = DrainRun.objects.bulk_create(
        DrainRun(
            trigger="cron",
            status="with_failures" if i % 3 == 0 else "succeeded",
            caller="cron 10.0.9.9",
            started=now - timedelta(seconds=i + 5),
            finished=now - timedelta(seconds=i + 3),
            total_processed=1,
            queue_results={"batch-jobs": {"processed": 1, "failed": i % 3 == 0}},
        )
        for i in range(rows)
    )
    JobRecord.objects.bulk_create(
        JobRecord(
            job_id=f"more-{i}",
            queue="batch-jobs",
            status="failed",
            exc_message="card declined",
            run=runs[i % len(runs)],
        )
        for i in range(rows)
    )
    WorkerProcess.objects.bulk_create(
        WorkerProcess(
            name=f"more-w{i}",
            role="dedicated",
            host="host9",
            pid=10_000 + i,
            state="stopped",
            queues=["batch-jobs"],
        )
        for i in range(rows)
    )


def test_the_home_page_costs_a_fixed_number_of_queries(
    admin_client: Client,
    history: dict[str, object],
    redis_server,
    django_assert_num_queries,
) -> None:
    url = reverse("admin:index")
    _get(admin_client, url, {})
    # The home page (ops/health/overview.py) beside BASE: the alarm's config
    # and last drain, the last drain run, the queues, the failed jobs of the
    # last day (a count and the newest few), the live workers, the mode,
    # the quota summary, the recent actions, the app list's permissions.
    with django_assert_num_queries(BASE + HOME):
        _get(admin_client, url, {})
    _more_history(2 * ROWS)
    with django_assert_num_queries(BASE + HOME):
        _get(admin_client, url, {})


def test_a_metrics_scrape_costs_a_fixed_number_of_queries(
    client: Client,
    history: dict[str, object],
    settings,
    django_assert_num_queries,
) -> None:
    settings.CRON_SECRET = "cron-secret-for-metrics-0123456789"
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1000

    def scrape() -> None:
        response = client.get(
            "/api/v1/cron/metrics", HTTP_X_CRON_TOKEN=settings.CRON_SECRET
        )
        assert response.status_code == 200

    scrape()  # the first folds the history into MetricsCarry
    # Then: the rate limit (2), the carry, the oldest running run, the runs
    # since the watermark, the running count, the usage carry and the usage
    # since it, the quota summary, the alarm (2), the open incident, the live
    # workers.
    with django_assert_num_queries(METRICS):
        scrape()
    _more_history(2 * ROWS)  # since the watermark: read, not folded
    with django_assert_num_queries(METRICS):
        scrape()


def test_the_jobs_column_sorts_by_the_processed_count_not_the_job_records(
    admin_client: Client, history: dict[str, object]
) -> None:
    # DrainRun has a reverse relation named like the column ("jobs", its job
    # records): sorting must use the column's own ordering, no join.
    response = admin_client.get(reverse("admin:ops_drainrun_changelist"), {"o": "4"})
    assert response.status_code == 200
    sql = str(response.context["cl"].result_list.query)
    assert "ops_jobrecord" not in sql
    assert '"ops_drainrun"."total_processed" ASC' in sql
    processed = [run.total_processed for run in response.context["cl"].result_list]
    assert processed == sorted(processed)
