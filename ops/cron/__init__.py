"""The cron API: the endpoints an external scheduler calls, and what guards them.

What lives here: the views (`views`, the only interface module), cron tokens
with scopes and rotation (`tokens`), the database rate limit, the client
address behind trusted proxies, the status answer, scheduler recipes and
history retention.

May import (services): `ops.engine`, `ops.workers`, `ops.scheduling`,
`ops.inspection`, `ops.usage`, `ops.models`. Only `views` is imported by
`kaireon.urls`; nothing in this package imports `views`.
"""
