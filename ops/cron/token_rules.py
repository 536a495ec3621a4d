"""Which environment cron tokens are refused: the one rule, with no Django import.

kaireon/settings.py applies it while the settings load, so every process
(gunicorn, every `manage.py` command, the drains' and workers' children)
refuses to start with a bad token; the system check ops.E001, the credential
chain (ops/cron/tokens.py) and the admin's token page apply the same function
to the settings in force.
"""

from __future__ import annotations

from collections.abc import Mapping

# The variables, in the runbook's order of precedence (ops/cron/tokens.py gives
# each its scope).
ENV_TOKEN_VARIABLES = ("DRAIN_QUEUES_TOKEN", "CRON_SECRET", "CRON_TOKEN")
MIN_ENV_TOKEN_LENGTH = 16


def env_token_problems(
    values: Mapping[str, str],
) -> list[tuple[tuple[str, ...], str]]:
    """(variables, message) for every problem; each variable named is refused.

    * surrounding whitespace: refused, never stripped. A presented token is
      stripped, so such a value could never match; stripping it here instead
      would hide the paste error (a trailing newline from a secrets manager)
      that put it there;
    * shorter than MIN_ENV_TOKEN_LENGTH characters: guessable;
    * the same value in two variables: both are refused, since one token
      cannot have two scopes (the first in the chain would win, and the other
      variable's scope would silently never apply).
    """
    problems: list[tuple[tuple[str, ...], str]] = []
    for variable in ENV_TOKEN_VARIABLES:
        value = values.get(variable) or ""
        if not value:
            continue
        if value != value.strip():
            problems.append(
                (
                    (variable,),
                    f"{variable} starts or ends with whitespace (a newline or "
                    "space pasted with it?); remove it: tokens are not "
                    "stripped, and a presented token never matches one that has it",
                )
            )
        elif len(value) < MIN_ENV_TOKEN_LENGTH:
            problems.append(
                (
                    (variable,),
                    f"{variable} is {len(value)} characters long; cron tokens "
                    f"must have at least {MIN_ENV_TOKEN_LENGTH}",
                )
            )
    first_with: dict[str, str] = {}
    for variable in ENV_TOKEN_VARIABLES:
        value = values.get(variable) or ""
        if not value:
            continue
        first = first_with.setdefault(value, variable)
        if first != variable:
            problems.append(
                (
                    (first, variable),
                    f"{first} and {variable} have the same value; give each "
                    "variable its own token (one value cannot have two scopes)",
                )
            )
    return problems
