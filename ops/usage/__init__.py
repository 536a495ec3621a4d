"""Redis usage: every command the console sends, counted, billed and budgeted.

What lives here: the metered Redis clients (`redis_client`), the usage
recorder that books commands per source into the database (`metering`), the
quota period and projection (`quota`), the worker-mode advisor, quota
incidents and the one matcher for a provider's quota error (`quota_errors`).

May import: `ops.models` and `ops.runtime` only. Everything that talks to Redis
goes through this package's clients, so it sits at the bottom.
"""
