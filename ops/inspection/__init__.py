"""Reading the state of the queues in Redis, at a known cost: queue depths and
backlog age for pages and the status endpoint, and the safe-switch check.

May import: `ops.usage`, `ops.models`, `ops.queues`.
"""
