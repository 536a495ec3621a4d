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
# worker list's mode, double-consumption check and host filter.
CASES = [
    ("drainrun", {}, 3),
    ("drainrun", {"q": "10.0.3.2"}, 3),
    ("drainrun", {"status__exact": "failed"}, 3),
    ("drainrun", {"o": "4"}, 3),
    ("drainrun", {"o": "-7"}, 3),
    ("drainrun", {"p": "2"}, 3),
    ("drainrun", {"deadline_hit__exact": "1"}, 3),
    ("jobrecord", {}, 3),
    ("jobrecord", {"q": "card declined"}, 3),
    ("jobrecord", {"q": "job-7"}, 3),
    ("jobrecord", {"status__exact": "failed"}, 3),
    ("jobrecord", {"queue": "dsar-jobs"}, 3),
    ("jobrecord", {"p": "2"}, 3),
    ("commandusage", {}, 2),
    ("commandusage", {"source__exact": "worker"}, 2),
    ("workerprocess", {}, 5),
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
