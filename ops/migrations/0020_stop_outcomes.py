"""Stop requests that stopped nothing end closed (issue 10, the Stop's gaps):
the `obsolete` and `not_running` outcomes, and the index of the sweep that
closes requests no process took."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0019_job_stop"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="jobstoprequest",
            name="handled_by",
            field=models.CharField(
                blank=True,
                help_text="The worker that stopped the job, or who closed the request unused and why.",
                max_length=200,
            ),
        ),
        migrations.AlterField(
            model_name="jobstoprequest",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("pending", "Pending (the job's process has not seen it yet)"),
                    (
                        "stopped",
                        "Stopped (the job was interrupted and failed as stopped)",
                    ),
                    (
                        "obsolete",
                        "Obsolete (that run had ended; a later run of the job was not stopped)",
                    ),
                    (
                        "not_running",
                        "Not running (no process was running the job: it had ended, or its worker does not watch for stops)",
                    ),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AddIndex(
            model_name="jobstoprequest",
            index=models.Index(
                condition=models.Q(("handled_at__isnull", True)),
                fields=["requested_at"],
                name="jobstoprequest_open_idx",
            ),
        ),
    ]
