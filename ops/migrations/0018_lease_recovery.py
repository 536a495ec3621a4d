"""Lease renewal and recovery of what dead or failed processes left in Redis
(issue 10, items 2-4): DrainRun.needs_recovery / recovered_by / recovered_at,
Lease.renewed_at, WorkerProcess.recovered_at.

Existing rows: a worker process that already ended was settled by its
supervisor (recovered_at = when it stopped); a run that left claim lists
unsettled needs recovery, as it did before."""

from django.conf import settings
from django.db import migrations, models
from django.db.models.functions import Coalesce


def backfill(apps, schema_editor):
    WorkerProcess = apps.get_model("ops", "WorkerProcess")
    WorkerProcess.objects.filter(state__in=["stopped", "crashed"]).update(
        recovered_at=Coalesce("stopped", "heartbeat")
    )
    DrainRun = apps.get_model("ops", "DrainRun")
    DrainRun.objects.filter(has_unsettled_claims=True).update(needs_recovery=True)


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0017_drain_progress"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="drainrun",
            name="needs_recovery",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="drainrun",
            name="recovered_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="drainrun",
            name="recovered_by",
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="lease",
            name="renewed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="workerprocess",
            name="recovered_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="drainrun",
            index=models.Index(
                condition=models.Q(("needs_recovery", True)),
                fields=["id"],
                name="drainrun_recovery_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="workerprocess",
            index=models.Index(
                condition=models.Q(("recovered_at__isnull", True)),
                fields=["heartbeat"],
                name="workerprocess_unsettled_idx",
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
