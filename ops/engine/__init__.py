"""The drain engine and job execution.

What lives here: the drain service every interface calls (`drain.drain`), its
options, the drain lease, the executor seam (`drain_worker`: one child process
per queue, reporting on a pipe) and how children are started (`children`),
recovery of jobs whose worker died, promotion of due scheduled jobs, the
enqueue service, and the mapping of a run to its JSON answer (`results`).

May import: `ops.models`, `ops.queues`, `ops.runtime`, `ops.jobs`, `ops.usage`.
Never the interfaces (`ops.console`, `ops.cron.views`, management commands)
nor the other service packages.
"""
