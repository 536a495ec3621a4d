"""The permission to requeue and delete RQ jobs from the console (the queue's
job pages, ops/console/admin/queue_jobs.py): `ops.manage_jobs`. Meta only: no
column changes."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0011_drainrun_status_with_failures"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="jobrecord",
            options={
                "ordering": ["-id"],
                "permissions": [("manage_jobs", "Can requeue and delete jobs")],
                "verbose_name": "job record",
                "verbose_name_plural": "job records",
            },
        ),
    ]
