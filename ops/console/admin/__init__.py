"""The admin pages, one module per area. Importing this package registers them.

`common` holds what pages share; `drains` (queues, drain runs, lease, Drain
now) comes first because `switch` extends its Queues admin; `jobs` lists the
job records of the drains.
"""

from ops.console.admin import (  # noqa: F401  (registers the pages)
    common,
    drains,
    jobs,
    quota,
    schedule,
    switch,
    tokens,
    workers,
)
