"""The built-in drain schedule (django-q2, database broker) and the missed-tick
alarm with its notifications.

The django-q2 entry points themselves are in `ops.tasks`, whose import path is
stored in the schedule's database rows and therefore never moves.

May import: `ops.usage`, `ops.models`, `ops.queues`, `ops.runtime`.
"""
