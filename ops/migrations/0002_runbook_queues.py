"""The five queues of the runbook, and the drain lease's row."""

from __future__ import annotations

from typing import Any

from django.db import migrations

RUNBOOK_QUEUES = [
    ("batch-jobs", "Batch processing."),
    ("dsar-jobs", "Data subject access requests."),
    ("journey-jobs", "Customer journey steps."),
    ("retrain-jobs", "Model retraining."),
    ("seed-jobs", "Seeding and backfills."),
]


def create(apps: Any, schema_editor: Any) -> None:
    Queue = apps.get_model("ops", "Queue")
    for priority, (name, description) in enumerate(RUNBOOK_QUEUES, start=1):
        Queue.objects.get_or_create(
            name=name,
            defaults={"priority": priority * 10, "description": description},
        )
    Lease = apps.get_model("ops", "Lease")
    Lease.objects.get_or_create(name="drain")


def remove(apps: Any, schema_editor: Any) -> None:
    apps.get_model("ops", "Queue").objects.filter(
        name__in=[name for name, _ in RUNBOOK_QUEUES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("ops", "0001_initial")]
    operations = [migrations.RunPython(create, remove)]
