"""Issue 15, finished.

- An index on WorkerProcess.heartbeat for the advisor's 7-day job count
  (ops/usage/advisor.py: jobs_last_7d), which read every worker row ever
  recorded.
- The pg_trgm GIN indexes of 0015 go (PostgreSQL only; SQLite never had
  them): the admin searches now look for a substring among the newest rows
  of the list through the index of its order (ops/console/admin/lists.py),
  and a trigram index would only tempt the planner into reading every match
  of a common term (344 ms for 400,000 job records) while costing every
  insert and ~10 % of the job-record table's size. The pg_trgm extension
  stays (harmless; other databases may use it).
"""

from typing import Any

from django.db import migrations, models

TRIGRAM_INDEXES = {
    "drainrun_caller_trgm": ("ops_drainrun", "caller"),
    "jobrecord_exc_trgm": ("ops_jobrecord", "exc_message"),
}


def drop_trigram_indexes(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in TRIGRAM_INDEXES:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


def create_trigram_indexes(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, (table, column) in TRIGRAM_INDEXES.items():
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" '
            f'USING gin ("{column}" gin_trgm_ops)'
        )


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0020_stop_outcomes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="workerprocess",
            index=models.Index(
                fields=["heartbeat"], name="workerprocess_heartbeat_idx"
            ),
        ),
        migrations.RunPython(drop_trigram_indexes, create_trigram_indexes),
    ]
