"""The admin pages, one module per area. Importing this package registers them.

`common` holds what pages share; `drains` (queues, drain runs, lease, Drain
now) comes first because `switch` extends its Queues admin; `jobs` lists the
job records of the drains; `queue_jobs` (a queue's jobs in Redis, requeue and
delete) comes last because it extends whichever Queues admin is registered by
then.
"""

from ops.console.admin import (  # noqa: F401  (registers the pages)
    alerts,
    common,
    drains,
    jobs,
    quota,
    schedule,
    switch,
    tokens,
    workers,
)

# isort: split
from ops.console.admin import queue_jobs  # noqa: F401  (after switch: see above)
