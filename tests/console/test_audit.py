"""Every operational action in the console leaves an audit entry (the admin's
LogEntry: who, when, what, shown in its recent actions), and history cannot
be deleted or rewritten from the admin."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ops.cron import tokens
from ops.engine import background
from ops.models import (
    CommandUsage,
    DrainRun,
    JobRecord,
    Queue,
    QuotaIncident,
    Source,
    TokenVersion,
)

QUEUES_URL = "/admin/ops/queue/"


def _queue_formset(**changes: dict[str, object]) -> dict[str, object]:
    """The queue list's bulk-edit POST, every row as it is but `changes`."""
    rows = list(Queue.objects.order_by("priority", "name"))
    data: dict[str, object] = {
        "form-TOTAL_FORMS": str(len(rows)),
        "form-INITIAL_FORMS": str(len(rows)),
        "_save": "Save",
    }
    for i, queue in enumerate(rows):
        values = {"enabled": queue.enabled, "priority": queue.priority}
        values.update(changes.get(queue.name, {}))
        data[f"form-{i}-id"] = str(queue.pk)
        data[f"form-{i}-priority"] = str(values["priority"])
        if values["enabled"]:
            data[f"form-{i}-enabled"] = "on"
    return data


def _drain_now(client: Client) -> object:
    return client.post("/admin/ops/drainrun/drain/", {"queues": ["batch-jobs"]})


def _test_drain(client: Client) -> object:
    return client.post("/admin/ops/tokenversion/scheduler-setup/")


def _rotate(client: Client) -> object:
    return client.post(
        "/admin/ops/tokenversion/rotate/", {"scope": "drain", "grace_hours": "1"}
    )


def _revoke(client: Client) -> object:
    row, _ = tokens.rotate(scope="cron")
    return client.post(f"/admin/ops/tokenversion/{row.pk}/revoke/")


def _disable_queue_in_the_list(client: Client) -> object:
    return client.post(QUEUES_URL, _queue_formset(**{"seed-jobs": {"enabled": False}}))


def _enable_queue_in_its_form(client: Client) -> object:
    queue = Queue.objects.get(name="seed-jobs")
    Queue.objects.filter(pk=queue.pk).update(enabled=False)
    return client.post(
        reverse("admin:ops_queue_change", args=[queue.pk]),
        {
            "name": queue.name,
            "enabled": "on",
            "priority": str(queue.priority),
            "description": queue.description,
            "created_0": "2024-01-01",
            "created_1": "00:00:00",
        },
    )


# (action, model, flag, words the entry's message says)
ACTIONS: list[tuple[Callable[[Client], object], type, int, str]] = [
    (_drain_now, DrainRun, ADDITION, "Drain now: started in the background"),
    (_test_drain, DrainRun, ADDITION, "Test drain from Scheduler setup"),
    (_rotate, TokenVersion, ADDITION, "Rotated: drain v1"),
    (_revoke, TokenVersion, CHANGE, "Revoked."),
    (_disable_queue_in_the_list, Queue, CHANGE, "Enabled"),
    (_enable_queue_in_its_form, Queue, CHANGE, "Enabled"),
]


@pytest.mark.parametrize(
    ("action", "model", "flag", "words"),
    ACTIONS,
    ids=lambda value: getattr(value, "__name__", None),
)
def test_each_operational_action_leaves_an_audit_entry(
    admin_client: Client,
    admin_user: User,
    monkeypatch: pytest.MonkeyPatch,
    action: Callable[[Client], object],
    model: type,
    flag: int,
    words: str,
) -> None:
    # The drains are queued, not run: the entry is written by the request.
    monkeypatch.setattr(background, "launch", lambda run: True)
    before = timezone.now()

    response = action(admin_client)

    assert response.status_code == 302, getattr(response, "content", b"")[:500]
    entry = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(model))
    assert entry.user == admin_user  # who
    assert entry.action_time >= before  # when
    assert entry.action_flag == flag
    assert words in entry.get_change_message()  # what
    assert model.objects.filter(pk=entry.object_id).exists()


def test_a_refused_second_drain_is_not_recorded_as_started(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "launch", lambda run: True)
    _drain_now(admin_client)
    _drain_now(admin_client)

    assert LogEntry.objects.count() == 1
    assert DrainRun.objects.count() == 1


# --- History cannot be deleted or rewritten ------------------------------------


def _incident() -> QuotaIncident:
    return QuotaIncident.objects.create(source=Source.DRAIN_JOBS, last_error="quota")


def _usage() -> CommandUsage:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    return CommandUsage.objects.create(hour=hour, source=Source.DRAIN_JOBS, commands=9)


def _job_record() -> JobRecord:
    return JobRecord.objects.create(job_id="j1", queue="batch-jobs", status="finished")


def _drain_run() -> DrainRun:
    return DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)


@pytest.mark.parametrize(
    ("model_name", "make"),
    [
        ("quotaincident", _incident),
        ("commandusage", _usage),
        ("jobrecord", _job_record),
        ("drainrun", _drain_run),
    ],
)
def test_history_rows_cannot_be_deleted_from_the_admin(
    admin_client: Client, model_name: str, make: Callable[[], object]
) -> None:
    row = make()
    model = type(row)
    url = reverse(f"admin:ops_{model_name}_delete", args=[row.pk])

    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    bulk = admin_client.post(
        reverse(f"admin:ops_{model_name}_changelist"),
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert model.objects.filter(pk=row.pk).exists()


def _rename(client: Client, queue: Queue, name: str) -> object:
    return client.post(
        reverse("admin:ops_queue_change", args=[queue.pk]),
        {
            "name": name,
            "enabled": "on" if queue.enabled else "",
            "priority": str(queue.priority),
            "description": queue.description,
            "created_0": "2024-01-01",
            "created_1": "00:00:00",
        },
    )


@pytest.mark.parametrize("history", ["drain run", "job record"])
def test_a_queue_with_history_cannot_be_renamed(
    admin_client: Client, history: str
) -> None:
    queue = Queue.objects.get(name="batch-jobs")
    if history == "drain run":
        run = _drain_run()
        run.finish(
            status=DrainRun.Status.SUCCEEDED,
            queue_results={"batch-jobs": {"processed": 0, "failed": 0, "remaining": 0}},
        )
    else:
        _job_record()

    response = _rename(admin_client, queue, "batch-jobs-v2")

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["name"]
    assert "has history" in errors["name"][0]
    assert "cannot be renamed" in errors["name"][0]
    assert Queue.objects.get(pk=queue.pk).name == "batch-jobs"
    assert not LogEntry.objects.exists()


def test_a_queue_without_history_can_be_renamed_and_the_change_is_recorded(
    admin_client: Client,
) -> None:
    queue = Queue.objects.create(name="typo-jobs", created=timezone.now())
    # Another queue's history does not hold this one back.
    _job_record()

    response = _rename(admin_client, queue, "tidy-jobs")

    assert response.status_code == 302
    assert Queue.objects.get(pk=queue.pk).name == "tidy-jobs"
    assert "Name" in LogEntry.objects.get().get_change_message()


def test_queues_cannot_be_deleted_even_without_history(admin_client: Client) -> None:
    queue = Queue.objects.create(name="spare-jobs", created=timezone.now())
    url = reverse("admin:ops_queue_delete", args=[queue.pk])

    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Queue.objects.filter(pk=queue.pk).exists()


def test_a_finished_run_is_not_rewritten_by_late_progress(db: None) -> None:
    run = _drain_run()
    run.finish(status=DrainRun.Status.SUCCEEDED, redis_commands=3)

    assert not run.note_progress(queue_results={}, redis_commands=99, current_jobs={})
    run.refresh_from_db()
    assert run.redis_commands == 3
    assert run.finished is not None
    assert run.finished <= timezone.now() + timedelta(seconds=1)
