"""Run statuses that tell the truth, and each run's jobs on its page (issue 11).

A drain whose jobs failed or crashed is `with_failures` — in the run row, the
endpoint's JSON, `manage.py drain --json` and the admin — failed jobs win over
the deadline, and the run page lists the run's job records (the crash reason
in Problems) for 0 Redis commands. Real redis-server, real drains.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rq import Queue as RQQueue

from ops.console.admin.common import STATUS_COLOURS
from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.engine.results import drain_answer, drain_result, summary_line
from ops.inspection.switch_check import switch_check
from ops.models import DrainRun, JobRecord
from ops.usage import advisor

pytestmark = pytest.mark.django_db(transaction=True)

RUNS_URL = "/admin/ops/drainrun/"
DRAIN_URL = "/admin/ops/drainrun/drain/"
JOBS_URL = "/admin/ops/jobrecord/"
S = DrainRun.Status


def run_drain(**options: object) -> DrainRun:
    return drain(trigger=DrainRun.Trigger.CLI, options=parse_options(**options))


def rq(name: str, client) -> RQQueue:
    return RQQueue(name, connection=client)


def run_page(client: Client, run: DrainRun) -> str:
    response = client.get(reverse("admin:ops_drainrun_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def footer_cost(html: str) -> int:
    match = re.search(r'id="ops-page-cost"[^>]*>This page spent (\d+) Redis', html)
    assert match, "no page-cost footer"
    return int(match.group(1))


def field_html(html: str, name: str) -> str:
    """The HTML of one read-only field's row on a change page."""
    row = rf'<div class="form-row[^"]*field-{name}[^"]*">(.*?)</div>\s*</div>'
    match = re.search(row, html, re.S)
    assert match, f"no field {name}"
    return match.group(1)


def jobs_table_rows(html: str) -> list[str]:
    """The run page's jobs table rows, as text with single spaces."""
    rows = re.findall(r'<tr class="ops-run-job [^"]*">(.*?)</tr>', html, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in rows]


# --- The status a drain gets ---------------------------------------------------


def test_it_calls_a_run_with_a_failing_job_with_failures(rq_client):
    queue = rq("dsar-jobs", rq_client)
    queue.enqueue("ops.jobs.fail")
    queue.enqueue("tests.jobs.add", 1, 2)

    run = run_drain()

    assert run.status == S.WITH_FAILURES
    assert run.get_status_display() == "Finished with failed jobs"
    assert (run.total_processed, run.total_failed) == (2, 1)
    assert run.deadline_hit is False
    assert drain_result(run)["status"] == "with_failures"
    assert drain_answer(run)[0] == 200  # the drain ran: not an HTTP error
    assert summary_line(run).startswith("with_failures: 2 processed, 1 failed")
    assert summary_line(run, label=True).startswith(
        "Finished with failed jobs: 2 processed, 1 failed"
    )
    assert DrainRun.objects.get(pk=run.pk).status == S.WITH_FAILURES


def test_it_keeps_succeeded_when_every_job_ends_well(rq_client):
    for i in range(3):
        rq("batch-jobs", rq_client).enqueue("tests.jobs.add", i, 1)

    run = run_drain()

    assert run.status == S.SUCCEEDED
    assert (run.total_processed, run.total_failed) == (3, 0)
    assert run.jobs.filter(status=JobRecord.Status.FINISHED).count() == 3


def test_it_calls_a_run_with_a_crashing_job_with_failures_and_records_why(
    rq_client,
):
    queue = rq("seed-jobs", rq_client)
    crash = queue.enqueue("ops.jobs.crash")  # os._exit(13) in the worker
    queue.enqueue("tests.jobs.add", 1, 1)

    run = run_drain(queues=["seed-jobs"])

    assert run.status == S.WITH_FAILURES
    assert (run.total_processed, run.total_failed) == (2, 1)
    record = run.jobs.get(job_id=crash.id)
    assert record.status == JobRecord.Status.ABANDONED
    assert record.exc_type == "AbandonedJobError"
    assert record.exc_message == "the drain's worker process died (exit status 13)"


def test_it_lets_failed_jobs_win_over_the_deadline(rq_client):
    queue = rq("batch-jobs", rq_client)
    queue.enqueue("ops.jobs.fail")
    for _ in range(60):
        queue.enqueue("ops.jobs.sleep", 150)

    # The budget leaves room for a slow child start on a loaded machine.
    run = run_drain(max_duration_ms=3000, queues=["batch-jobs"])

    assert run.status == S.WITH_FAILURES
    # ... and the run still says that it stopped at its time budget.
    assert run.deadline_hit is True
    assert run.queue_results["batch-jobs"]["remaining"] > 0
    body = drain_result(run)
    assert (body["status"], body["deadlineHit"]) == ("with_failures", True)


# --- Where the status is shown -------------------------------------------------


def test_it_answers_with_failures_from_the_cron_endpoint(client, rq_client, settings):
    settings.DRAIN_QUEUES_TOKEN = "drain-token-" + "d" * 20
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1000
    rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail")

    response = client.post(
        "/api/v1/cron/drain-queues",
        data="{}",
        content_type="application/json",
        HTTP_X_CRON_TOKEN=settings.DRAIN_QUEUES_TOKEN,
    )

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "with_failures"
    assert (body["totalProcessed"], body["totalFailed"]) == (1, 1)
    assert DrainRun.objects.get(public_id=body["runId"]).status == S.WITH_FAILURES


def test_it_says_with_failures_in_drain_json_and_exits_1(rq_client):
    rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail")
    out = StringIO()

    with pytest.raises(SystemExit) as exit_:
        call_command("drain", "--json", stdout=out, stderr=StringIO())

    assert exit_.value.code == 1  # README: 1 = jobs failed, as before
    body = json.loads(out.getvalue())
    assert body["status"] == "with_failures"
    assert body["totalFailed"] == 1


def test_it_says_with_failures_in_the_drain_line(rq_client):
    rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail")
    out = StringIO()

    with pytest.raises(SystemExit) as exit_:
        call_command("drain", stdout=out, stderr=StringIO())

    assert exit_.value.code == 1
    assert " with_failures: 1 processed, 1 failed, 0 left" in out.getvalue()


def test_it_gives_the_status_its_own_colour():
    assert set(STATUS_COLOURS) == set(S)
    assert STATUS_COLOURS[S.WITH_FAILURES] not in {
        colour for status, colour in STATUS_COLOURS.items() if status != S.WITH_FAILURES
    }


def test_it_finds_with_failures_runs_with_the_admin_status_filter(admin_client):
    for status, caller in (
        (S.SUCCEEDED, "cron ok"),
        (S.WITH_FAILURES, "cron with failures"),
        (S.DEADLINE, "cron deadline"),
        (S.FAILED, "cron failed"),
    ):
        DrainRun.objects.create(
            trigger=DrainRun.Trigger.CRON,
            caller=caller,
            status=status,
            finished=timezone.now(),
        )

    html = admin_client.get(RUNS_URL).content.decode()
    assert "Finished with failed jobs" in html  # a choice of the status filter
    assert "?status__exact=with_failures" in html

    html = admin_client.get(
        RUNS_URL, {"status__exact": "with_failures"}
    ).content.decode()
    assert "cron with failures" in html
    for other in ("cron ok", "cron deadline", "cron failed"):
        assert other not in html
    assert (
        f'class="ops-badge ops-status-with_failures" '
        f'style="background:{STATUS_COLOURS[S.WITH_FAILURES]}" '
        f'title="Finished with failed jobs">with_failures</span>'
    ) in html


def test_it_finds_runs_that_hit_the_deadline_whatever_their_status(admin_client):
    for status, hit, caller in (
        (S.WITH_FAILURES, True, "cron failures at deadline"),
        (S.DEADLINE, True, "cron deadline"),
        (S.WITH_FAILURES, False, "cron failures in time"),
    ):
        DrainRun.objects.create(
            trigger=DrainRun.Trigger.CRON,
            caller=caller,
            status=status,
            deadline_hit=hit,
        )

    html = admin_client.get(RUNS_URL, {"deadline_hit__exact": "1"}).content.decode()

    assert "cron failures at deadline" in html and "cron deadline" in html
    assert "cron failures in time" not in html


def test_drain_now_says_when_jobs_failed(admin_client, rq_client, background_drains):
    rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail")

    response = admin_client.post(DRAIN_URL, {"queues": ["dsar-jobs"]})
    background_drains(DrainRun.objects.get().pk)

    html = admin_client.get(response["Location"]).content.decode()
    assert DrainRun.objects.get().status == S.WITH_FAILURES
    assert re.search(
        r'id="ops-run-state"><strong>Finished</strong>: '
        r"Finished with failed jobs: 1 processed, 1 failed",
        html,
    )


# --- Statuses where runs are counted -------------------------------------------


def test_a_with_failures_run_breaks_the_switch_checks_empty_streak():
    now = timezone.now()
    specs = [(S.SUCCEEDED, 0)] * 3 + [(S.WITH_FAILURES, 2), (S.SUCCEEDED, 0)]
    made = []
    for i, (status, processed) in enumerate(specs):
        started = now - timedelta(minutes=5 * (len(specs) - i))
        made.append(
            DrainRun.objects.create(
                trigger=DrainRun.Trigger.CRON,
                status=status,
                total_processed=processed,
                total_failed=min(processed, 1),
                started=started,
                finished=started + timedelta(seconds=1),
            )
        )

    check = switch_check()

    assert check.consecutive_empty_drains == 1
    assert check.streak_broken_by == made[3]
    assert not check.safe


def test_the_advisor_counts_with_failures_runs_as_busy_drains(settings):
    settings.DRAIN_EXECUTOR = "rq"
    now = timezone.now()
    for i in range(10):
        DrainRun.objects.create(
            trigger=DrainRun.Trigger.CRON,
            status=S.WITH_FAILURES,
            started=now - timedelta(hours=i + 1),
            total_processed=10,
            total_failed=1,
            redis_commands=501,
        )

    costs = advisor.measured_costs(now)

    assert costs.per_job.measured  # 100 jobs in 10 drains
    assert costs.per_job.value == pytest.approx(50.0)  # (5010 - 10 x 1) / 100


def test_the_status_endpoint_counts_a_with_failures_run_as_a_drain_that_ran(
    client, settings
):
    settings.CRON_SECRET = "cron-secret-for-status-0123456789"
    finished = timezone.now()
    DrainRun.objects.create(
        trigger="cron",
        status=S.WITH_FAILURES,
        finished=finished,
        total_processed=3,
        total_failed=1,
    )

    body = client.get(
        "/api/v1/cron/status", HTTP_X_CRON_TOKEN=settings.CRON_SECRET
    ).json()

    assert body["lastDrain"]["status"] == "with_failures"
    assert body["lastDrain"]["totalFailed"] == 1
    assert body["lastSuccessfulDrainAt"] == finished.isoformat()


# --- The run page: its jobs and its problems -----------------------------------


def test_the_run_page_shows_a_crashed_jobs_reason_and_lists_its_jobs(
    admin_client, rq_client, wire
):
    queue = rq("seed-jobs", rq_client)
    crash = queue.enqueue("ops.jobs.crash")
    ok = queue.enqueue("tests.jobs.add", 2, 3)
    rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail")
    run = run_drain(queues=["seed-jobs", "dsar-jobs"])
    assert run.status == S.WITH_FAILURES
    wire.reset()

    html = run_page(admin_client, run)

    # 0 Redis commands: the records are in the database.
    assert footer_cost(html) == wire.billed() == 0
    assert ">with_failures</span>" in html
    problems = field_html(html, "crashed_jobs")
    assert crash.id in problems
    assert "the drain&#x27;s worker process died (exit status 13)" in problems
    rows = jobs_table_rows(html)
    outcomes = sorted((row.split()[0], row.split()[1], row) for row in rows)
    [crashed] = [row for job_id, _, row in outcomes if job_id == crash.id]
    assert crashed.startswith(f"{crash.id} seed-jobs - abandoned - - ")
    assert crashed.endswith(
        "AbandonedJobError : the drain&#x27;s worker process died (exit status 13)"
    )
    # The job claimed with the crashing one went back to the queue unstarted,
    # then ran in the same drain.
    ran = [row for job_id, _, row in outcomes if job_id == ok.id]
    assert [row.split()[2:4] for row in ran] == [
        ["-", "requeued"],
        ["tests.jobs.add", "finished"],
    ] or [row.split()[2:4] for row in ran] == [
        ["tests.jobs.add", "finished"],
        ["-", "requeued"],
    ]
    [failed] = [row for row in rows if "ops.jobs.fail" in row]
    assert "dsar-jobs ops.jobs.fail failed" in failed
    assert failed.endswith("CanaryFailure : canary job failed on purpose")
    assert len(rows) == 4


def test_the_run_page_lists_its_jobs_in_order_with_outcomes_for_no_redis_command(
    admin_client, wire
):
    run = DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON, status=S.WITH_FAILURES, finished=timezone.now()
    )
    other = DrainRun.objects.create(trigger=DrainRun.Trigger.CRON, status=S.SUCCEEDED)
    started = timezone.now() - timedelta(seconds=5)
    JobRecord.objects.create(
        job_id="job-1-ok",
        queue="batch-jobs",
        func="tests.jobs.add",
        status=JobRecord.Status.FINISHED,
        started=started,
        ended=started + timedelta(milliseconds=42),
        duration_ms=42,
        run=run,
    )
    JobRecord.objects.create(
        job_id="job-2-failed",
        queue="dsar-jobs",
        func="ops.jobs.fail",
        status=JobRecord.Status.FAILED,
        started=started,
        duration_ms=7,
        exc_type="CanaryFailure",
        exc_message="canary <b>job</b> failed on purpose",
        run=run,
    )
    JobRecord.objects.create(
        job_id="job-3-retried",
        queue="dsar-jobs",
        func="ops.jobs.fail",
        status=JobRecord.Status.RETRIED,
        exc_type="CanaryFailure",
        exc_message="again",
        run=run,
    )
    JobRecord.objects.create(
        job_id="job-of-another-run",
        queue="batch-jobs",
        status=JobRecord.Status.FINISHED,
        run=other,
    )
    wire.reset()

    html = run_page(admin_client, run)

    assert footer_cost(html) == wire.billed() == 0
    rows = jobs_table_rows(html)
    when = timezone.localtime(started).strftime("%Y-%m-%d %H:%M:%S")
    assert rows == [
        f"job-1-ok batch-jobs tests.jobs.add finished {when} 42 ms -",
        f"job-2-failed dsar-jobs ops.jobs.fail failed {when} 7 ms "
        "CanaryFailure : canary &lt;b&gt;job&lt;/b&gt; failed on purpose",
        "job-3-retried dsar-jobs ops.jobs.fail retried - - CanaryFailure : again",
    ]  # oldest first (newest last), escaped, another run's jobs not shown
    assert 'class="ops-badge ops-status-failed"' in html
    assert field_html(html, "crashed_jobs").strip().endswith("-")  # none crashed
    assert "all 3 jobs of this run" in html
    assert f'href="{JOBS_URL}?run={run.pk}"' in html
    failed_url = f"{JOBS_URL}?run={run.pk}&amp;status__exact=failed"
    assert f'href="{failed_url}" class="ops-run-jobs-outcome">1 failed</a>' in html


def test_the_run_page_shows_200_jobs_and_links_to_all_of_them(admin_client):
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CRON, status=S.SUCCEEDED)
    JobRecord.objects.bulk_create(
        JobRecord(
            job_id=f"job-{i:03d}",
            queue="batch-jobs",
            status=JobRecord.Status.FINISHED,
            run=run,
        )
        for i in range(205)
    )

    html = run_page(admin_client, run)

    rows = jobs_table_rows(html)
    assert len(rows) == 200
    assert rows[0].startswith("job-000 ") and rows[-1].startswith("job-199 ")
    assert "The first 200 in the order they ended" in html
    assert "all 205 jobs of this run" in html


def test_the_job_list_lists_one_runs_jobs(admin_client):
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CRON, status=S.SUCCEEDED)
    other = DrainRun.objects.create(trigger=DrainRun.Trigger.CRON, status=S.SUCCEEDED)
    for job_id, owner in (("job-a", run), ("job-b", run), ("job-c", other)):
        JobRecord.objects.create(
            job_id=job_id, queue="batch-jobs", status="finished", run=owner
        )

    response = admin_client.get(JOBS_URL, {"run": str(run.pk)})

    assert response.status_code == 200  # accepted, not "incorrect lookup"
    html = response.content.decode()
    assert "job-a" in html and "job-b" in html and "job-c" not in html
    # The filter names the run it shows.
    started = timezone.localtime(run.started).strftime("%Y-%m-%d %H:%M:%S")
    assert f"{started} (succeeded)" in html
    html = admin_client.get(JOBS_URL, {"run": "nope"}).content.decode()
    assert "job-a" not in html and "job-c" not in html


def test_the_run_page_hides_the_jobs_from_users_who_may_not_see_job_records():
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CRON, status=S.SUCCEEDED)
    JobRecord.objects.create(
        job_id="job-secret", queue="batch-jobs", status="finished", run=run
    )
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_drainrun"))
    client = Client()
    client.force_login(user)

    html = run_page(client, run)

    assert "job-secret" not in html
    assert "You may not see job records" in html
