"""Always-on workers: the supervisor, its quiet RQ worker children, and the
registry of who consumes which queue (double-consumption warnings).

May import: `ops.engine` (children, recovery, scheduled promotion),
`ops.usage`, `ops.models`, `ops.queues`, `ops.runtime`.
"""
