"""Copy-paste recipes for the external schedulers that call the drain endpoint.

Each recipe is filled in with this site's drain URL and the header name, and a
placeholder where the token goes: the console never knows a token after showing
it once, and a page that printed one would leak it into screenshots and caches.

The time budgets differ per scheduler on purpose. A scheduler that gives up
before the answer records a failure (the drain itself still finishes on the
server and is recorded), and one that retries a timed-out call sends billed
drains for nothing, so each recipe asks for a budget under its timeout.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass

from django.conf import settings

HEADER = (
    "X-Cron-Token"  # what ops/cron/views.py reads first (then Authorization: Bearer)
)
PLACEHOLDER = "<YOUR-DRAIN-TOKEN>"
SECRET_NAME = "KAIREON_DRAIN_TOKEN"  # the environment/secret name the recipes use
INTERVAL_MINUTES = 5
CRON_EXPRESSION = f"*/{INTERVAL_MINUTES} * * * *"

# cron-job.org closes the connection after 30 s (its FAQ); uptime monitors
# commonly allow about as much. Leave room for a job still running at the budget.
CRON_JOB_ORG_TIMEOUT_S = 30
MONITOR_TIMEOUT_S = 30
SHORT_BUDGET_MS = 20_000
# EventBridge API destinations time out after 5 s and, by default, retry for
# 24 h up to 185 times: a short budget and no retries.
EVENTBRIDGE_TIMEOUT_S = 5
EVENTBRIDGE_BUDGET_MS = 3_000


@dataclass(frozen=True)
class Block:
    """One copyable text: shown in a <pre> with a Copy button."""

    caption: str
    text: str


@dataclass(frozen=True)
class Recipe:
    key: str  # HTML id, and what the tests look for
    title: str
    intro: str
    blocks: tuple[Block, ...]
    notes: tuple[str, ...] = ()


def full_budget_timeout_s() -> int:
    """How long a default drain can take to answer: the budget, the grace of a
    job still running at the budget, and a margin for the HTTP round trip."""
    total_ms = settings.DRAIN_MAX_DURATION_MS + settings.DRAIN_JOB_GRACE_MS
    return math.ceil(total_ms / 1000) + 30


def with_budget(url: str, budget_ms: int) -> str:
    # Query parameters are the one way every scheduler can pass an option.
    return f"{url}?maxDurationMs={budget_ms}"


def _aligned(pairs: list[tuple[str, str]]) -> str:
    """Settings to type into a web form, one per line, values in a column."""
    width = max(len(name) for name, _ in pairs) + 2
    return "\n".join(f"{name + ':':<{width}}{value}" for name, value in pairs)


def build_recipes(endpoint_url: str) -> list[Recipe]:
    """The recipes, for the drain endpoint at `endpoint_url` (absolute)."""
    return [
        _cron_job_org(endpoint_url),
        _eventbridge(endpoint_url),
        _github_actions(endpoint_url),
        _uptime_monitor(endpoint_url),
        _curl(endpoint_url),
    ]


def _cron_job_org(url: str) -> Recipe:
    settings_text = _aligned(
        [
            ("Title", "Kaireon drain queues"),
            ("URL", with_budget(url, SHORT_BUDGET_MS)),
            ("Schedule", f"every {INTERVAL_MINUTES} minutes ({CRON_EXPRESSION})"),
            ("Request method", "POST (Advanced tab)"),
            ("Header", f"{HEADER}: {PLACEHOLDER} (Advanced tab → Headers)"),
            ("Timeout", f"{CRON_JOB_ORG_TIMEOUT_S} seconds"),
            ("Notify", "on failure"),
        ]
    )
    return Recipe(
        key="cron-job-org",
        title="cron-job.org",
        intro=(
            "Create a cron job (Console → Cronjobs → Create cronjob) with these "
            "settings. The header goes under the Advanced tab."
        ),
        blocks=(
            Block("Job settings", settings_text),
            Block("URL", with_budget(url, SHORT_BUDGET_MS)),
            Block("Header", f"{HEADER}: {PLACEHOLDER}"),
        ),
        notes=(
            f"cron-job.org stops waiting after {CRON_JOB_ORG_TIMEOUT_S} s, so the "
            f"URL asks for a {SHORT_BUDGET_MS // 1000} s time budget. A job still "
            "running at the budget can make the answer later: cron-job.org then "
            "records a timeout, but the drain finishes here and is in Drain runs.",
            "A 409 answer means another drain was running: nothing is wrong.",
        ),
    )


def _eventbridge(url: str) -> Recipe:
    rule = "kaireon-drain-every-5-minutes"
    target_input = json.dumps({"maxDurationMs": EVENTBRIDGE_BUDGET_MS})
    auth = json.dumps(
        {"ApiKeyAuthParameters": {"ApiKeyName": HEADER, "ApiKeyValue": PLACEHOLDER}}
    )
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    # In double quotes, so that the shell puts the destination's ARN in.
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "events:InvokeApiDestination",
                    "Resource": "$DESTINATION_ARN",
                }
            ],
        },
        separators=(",", ":"),
    ).replace('"', '\\"')
    # The target's JSON goes through an unquoted heredoc so that the ARNs are
    # expanded; the heredoc keeps \" as typed, which is what the Input string needs.
    escaped_input = target_input.replace('"', '\\"')
    script = f"""\
# 1. A connection: EventBridge keeps the token (in Secrets Manager) and sends it
#    as the {HEADER} header on every call.
CONNECTION_ARN=$(aws events create-connection \\
  --name kaireon-drain \\
  --authorization-type API_KEY \\
  --auth-parameters {shlex.quote(auth)} \\
  --query ConnectionArn --output text)

# 2. The API destination: this site's drain endpoint, POST.
DESTINATION_ARN=$(aws events create-api-destination \\
  --name kaireon-drain-queues \\
  --connection-arn "$CONNECTION_ARN" \\
  --invocation-endpoint {shlex.quote(url)} \\
  --http-method POST \\
  --invocation-rate-limit-per-second 1 \\
  --query ApiDestinationArn --output text)

# 3. The schedule.
aws events put-rule \\
  --name {rule} \\
  --schedule-expression 'rate({INTERVAL_MINUTES} minutes)'

# 4. A role EventBridge assumes to call the API destination.
ROLE_ARN=$(aws iam create-role \\
  --role-name kaireon-drain-eventbridge \\
  --assume-role-policy-document {shlex.quote(trust)} \\
  --query Role.Arn --output text)
aws iam put-role-policy \\
  --role-name kaireon-drain-eventbridge \\
  --policy-name invoke-kaireon-drain \\
  --policy-document "{policy}"

# 5. The target: no retries, and a {EVENTBRIDGE_BUDGET_MS // 1000} s budget as the body
#    (without an Input the whole event is sent, which the endpoint refuses).
cat > kaireon-drain-targets.json <<EOF
[
  {{
    "Id": "kaireon-drain",
    "Arn": "$DESTINATION_ARN",
    "RoleArn": "$ROLE_ARN",
    "Input": "{escaped_input}",
    "RetryPolicy": {{"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}}
  }}
]
EOF
aws events put-targets --rule {rule} --targets file://kaireon-drain-targets.json
"""
    rotate = (
        "aws events update-connection --name kaireon-drain "
        "--authorization-type API_KEY "
        f"--auth-parameters {shlex.quote(auth)}"
    )
    return Recipe(
        key="aws-eventbridge",
        title="AWS EventBridge (API destination)",
        intro=(
            "An EventBridge rule on a schedule, whose target is an API destination "
            "with a connection that sends the token as an API key header. Run these "
            "AWS CLI commands in one shell (they pass ARNs along in variables)."
        ),
        blocks=(
            Block("AWS CLI", script),
            Block("After a rotation: give the connection the new token", rotate),
        ),
        notes=(
            f"API destinations give up after {EVENTBRIDGE_TIMEOUT_S} s and by "
            "default retry a timed-out call for 24 hours, up to 185 times: the "
            f"target asks for a {EVENTBRIDGE_BUDGET_MS // 1000} s budget and turns "
            "retries off. The drain still finishes here when EventBridge stops "
            "waiting.",
        ),
    )


def _github_actions(url: str) -> Recipe:
    max_time = full_budget_timeout_s()
    workflow = f"""\
# .github/workflows/kaireon-drain.yml
name: Kaireon drain queues

on:
  schedule:
    - cron: '{CRON_EXPRESSION}'
  workflow_dispatch: {{}}

permissions: {{}}

# One drain at a time from this workflow; the server refuses overlaps anyway (409).
concurrency:
  group: kaireon-drain
  cancel-in-progress: false

jobs:
  drain:
    runs-on: ubuntu-latest
    timeout-minutes: {math.ceil(max_time / 60) + 1}
    steps:
      - name: POST /api/v1/cron/drain-queues
        env:
          # Through the environment, not pasted into the script: the secret never
          # becomes part of the command GitHub renders.
          {SECRET_NAME}: ${{{{ secrets.{SECRET_NAME} }}}}
        run: |
          curl -fsS --max-time {max_time} -X POST \\
            -H "{HEADER}: ${SECRET_NAME}" \\
            {shlex.quote(url)}
"""
    return Recipe(
        key="github-actions",
        title="GitHub Actions",
        intro=(
            f"Add a repository secret named {SECRET_NAME} (Settings → Secrets and "
            f"variables → Actions) whose value is {PLACEHOLDER}, then commit this "
            "workflow to the default branch."
        ),
        blocks=(Block("Workflow", workflow),),
        notes=(
            "GitHub runs scheduled workflows on a best-effort basis: runs can start "
            "late or be dropped when GitHub is busy, and in public repositories "
            "they are disabled after 60 days without activity.",
            "curl -f makes the run fail on any error status, 409 (another drain "
            "was running) included.",
        ),
    )


def _uptime_monitor(url: str) -> Recipe:
    settings_text = _aligned(
        [
            ("Monitor type", "HTTP(s)"),
            ("Friendly name", "Kaireon drain queues"),
            ("URL", with_budget(url, SHORT_BUDGET_MS)),
            ("Monitoring interval", f"{INTERVAL_MINUTES} minutes"),
            ("Request timeout", f"{MONITOR_TIMEOUT_S} seconds"),
            ("HTTP method", "POST"),
            ("Custom HTTP header", f"{HEADER}: {PLACEHOLDER}"),
        ]
    )
    return Recipe(
        key="uptime-monitor",
        title="Uptime monitor (UptimeRobot and the like)",
        intro=(
            "An HTTP(s) monitor doubles as a scheduler: every check is a drain. The "
            "method and the header are usually under the monitor's advanced settings."
        ),
        blocks=(Block("Monitor settings", settings_text),),
        notes=(
            "Monitors count only 2xx as up: a 409 (another drain was running) shows "
            "as a short outage. Monitors that re-check at once to confirm an outage "
            "send extra drains; each costs at least one Redis command.",
        ),
    )


def _curl(url: str) -> Recipe:
    command = f'curl -fsS -X POST -H "{HEADER}: ${SECRET_NAME}" {url}'
    crontab = (
        f"{CRON_EXPRESSION} curl -fsS --max-time {full_budget_timeout_s()} -X POST "
        f'-H "{HEADER}: ${SECRET_NAME}" {url}'
    )
    return Recipe(
        key="curl",
        title="curl (any machine with cron)",
        intro="The bare call, for a shell or a crontab.",
        blocks=(
            Block(
                "Shell",
                f"export {SECRET_NAME}={shlex.quote(PLACEHOLDER)}\n{command}",
            ),
            Block(
                "crontab line (set the variable at the top of the crontab)",
                f"{SECRET_NAME}={PLACEHOLDER}\n{crontab}",
            ),
        ),
    )
