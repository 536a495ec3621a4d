"""`manage.py redis_switch_check`: JSON keys, human output, exit statuses."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
import rq
from django.core.management import call_command
from django.utils import timezone

from ops.models import DrainRun

QUEUES = ["batch-jobs", "dsar-jobs", "journey-jobs", "retrain-jobs", "seed-jobs"]


def check_cmd(*args: str) -> tuple[int, str, str]:
    """call_command, returning (exit status, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("redis_switch_check", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def empty_drains(n: int = 3) -> None:
    now = timezone.now()
    for i in range(n):
        started = now - timedelta(minutes=5 * (n - i))
        DrainRun.objects.create(
            trigger=DrainRun.Trigger.CRON,
            status=DrainRun.Status.SUCCEEDED,
            started=started,
            finished=started + timedelta(seconds=1),
        )


@pytest.mark.django_db
def test_json_has_the_documented_keys_and_exit_1_when_not_safe(raw_redis):
    empty_drains(1)
    rq.Queue("batch-jobs", connection=raw_redis).enqueue("tests.jobs.add", 1, 2)

    code, out, _ = check_cmd("--json")

    assert code == 1
    body = json.loads(out)
    for key in (
        "safe",
        "consecutiveEmptyDrains",
        "requiredEmptyDrains",
        "pending",
        "workers",
        "reasons",
        "redisCommands",
    ):
        assert key in body, key
    assert body["safe"] is False
    assert body["consecutiveEmptyDrains"] == 1
    assert body["requiredEmptyDrains"] == 3
    assert list(body["pending"]) == QUEUES
    assert body["pending"]["batch-jobs"] == {
        "enabled": True,
        "registered": True,
        "queued": 1,
        "intermediate": 0,
        "scheduled": 0,
        "started": 0,
        "deferred": 0,
        "failed": 0,
    }
    assert body["workers"] == {"alwaysOn": [], "alwaysOnLive": 0, "rqRegistered": 0}
    assert body["reasons"] == [
        "only 1 of 3 consecutive empty drains",
        "batch-jobs: 1 queued job would be abandoned",
    ]
    assert body["redisCommands"] == body["expectedRedisCommands"] == 6 * 5 + 2


@pytest.mark.django_db
def test_exit_0_and_safe_true_when_safe():
    empty_drains(3)

    code, out, _ = check_cmd("--json")

    assert code == 0
    body = json.loads(out)
    assert body["safe"] is True
    assert body["reasons"] == []
    assert body["consecutiveEmptyDrains"] == 3


@pytest.mark.django_db
def test_human_output_starts_with_a_one_line_verdict(raw_redis):
    empty_drains(3)
    rq.Queue("seed-jobs", connection=raw_redis).enqueue("tests.jobs.add", 1, 2)

    code, out, _ = check_cmd()

    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "NOT SAFE to switch Redis: 1 reason."
    assert "  - seed-jobs: 1 queued job would be abandoned" in lines
    assert "Empty-drain streak: 3 of 3 required." in lines
    assert lines[-1] == (
        "This check spent 32 Redis commands (6 per queue + 2, + 6 per queue in "
        "rq:queues that is not on the Queues page: 32 here)."
    )


@pytest.mark.django_db
def test_human_output_when_safe():
    empty_drains(3)

    code, out, _ = check_cmd()

    assert code == 0
    assert out.splitlines()[0] == (
        "SAFE to switch Redis: 3 consecutive empty drains (of 3 required), "
        "nothing pending, no live workers."
    )


@pytest.mark.django_db
def test_a_quota_error_is_not_safe_but_not_unreachable(fault):
    empty_drains(3)
    fault.exhaust()

    code, out, _ = check_cmd("--json")

    assert code == 1
    body = json.loads(out)
    assert body["safe"] is False
    assert body["redisProblem"] == "quota"
    assert body["pending"] is None


def test_redis_down_exits_4_with_a_reason_in_a_fresh_process(manage_py):
    empty_drains(3)

    result = manage_py(
        "redis_switch_check", "--json", env={"REDIS_URL": "redis://127.0.0.1:1/0"}
    )

    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    body = json.loads(result.stdout)
    assert body["safe"] is False
    assert body["redisProblem"] == "unreachable"
    assert body["pending"] is None
    assert body["reasons"][0].startswith("Redis is unreachable")


def test_redis_down_human_output_in_a_fresh_process(manage_py):
    result = manage_py("redis_switch_check", env={"REDIS_URL": "redis://127.0.0.1:1/0"})

    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NOT SAFE to switch Redis")
    assert "  unknown: Redis could not be read" in lines


def test_a_fresh_process_costs_six_per_queue_plus_two_on_the_wire(wire, manage_py):
    empty_drains(3)

    result = manage_py("redis_switch_check", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    # No handshake, no MULTI/EXEC, no registry cleanup: AUTH (not billed) and
    # the one pipeline.
    assert wire.snapshot() == {
        "AUTH": 1,
        "LLEN": 10,
        "ZCARD": 20,
        "SCARD": 1,
        "SMEMBERS": 1,
    }
    assert json.loads(result.stdout)["redisCommands"] == wire.billed() == 32
