"""A drain run whose jobs failed or crashed gets its own status, `with_failures`
("Finished with failed jobs"), instead of `succeeded`. Choices only: no column
changes, and existing rows keep the status they were given."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0010_scheduled_hint_and_unsettled_claims"),
    ]

    operations = [
        migrations.AlterField(
            model_name="drainrun",
            name="status",
            field=models.CharField(
                choices=[
                    ("running", "Running"),
                    ("succeeded", "Succeeded"),
                    ("with_failures", "Finished with failed jobs"),
                    ("deadline", "Stopped at the time budget"),
                    ("failed", "Failed"),
                    ("skipped", "Skipped (another drain was running)"),
                    ("abandoned", "Abandoned (its process died)"),
                ],
                default="running",
                max_length=16,
            ),
        ),
    ]
