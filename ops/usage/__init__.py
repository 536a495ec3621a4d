"""Redis usage: every command the console sends, counted, billed and budgeted.

What lives here: the metered Redis clients (`redis_client`), the usage
recorder that books commands per source into the database (`metering`), the
quota period and projection (`quota`), the worker-mode advisor, quota
incidents, the one matcher for a provider's quota error and its `Usage: N`
(`quota_errors`), the provider's figures against the meters (`provider`), and
what the settings hand django-rq so that its connections are metered
(`rq_settings`, free of Django imports).

May import: `ops.models` and `ops.runtime` only. Everything that talks to Redis
goes through this package's clients, so it sits at the bottom.
"""
