"""Kaireon Ops settings: every value comes from the environment (see .env.example).

A bad value stops the process at start with a message naming the variable, so a
typo in a deploy never turns into a silently different behaviour.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

# Pure rules with no Django import: safe to apply while the settings load.
from ops.cron.token_rules import env_token_problems
from ops.usage.rq_settings import queue_settings as rq_queue_settings

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is a convenience for development; real deploys set variables.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="")
    if raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(
        f"{name} must be a boolean (1/0, true/false), got {raw!r}"
    )


def _int(name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = env.str(name, default="")
    if raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum else f">= {minimum}"
        raise ImproperlyConfigured(f"{name} must be {bounds}, got {value}")
    return value


DEBUG = _bool("DEBUG", False)

# Where the console keeps its local state: the SQLite file, the local Redis data,
# the generated secret key.
STATE_DIR = Path(env.str("KAIREON_STATE_DIR", default="") or str(BASE_DIR / "var"))

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY and (STATE_DIR / "secret_key").is_file():
    # Written once by `./dev run`, so that `manage.py ...` from a shell or a cron
    # job uses the same key as the console without copying it around.
    SECRET_KEY = (STATE_DIR / "secret_key").read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set (or DEBUG=1 for a development-only key)"
        )
    SECRET_KEY = "django-insecure-development-only-key-do-not-deploy"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # Django's admin with the console's site (branding, home page, app order).
    "ops.console.apps.KaireonAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Admin login throttling, in the database (0 Redis commands).
    "axes",
    "django_q",
    "ops.apps.OpsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "ops.console.middleware.page_redis_cost",
    # Last, as django-axes asks: it turns a locked-out login into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "kaireon.urls"
WSGI_APPLICATION = "kaireon.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ops.console.context_processors.quota_banner",
                "ops.console.context_processors.page_cost",
            ],
        },
    },
]

try:
    DATABASES = {
        "default": environ.Env.db_url_config(
            # An empty value (a copied .env.example line) means "the default".
            env.str("DATABASE_URL", default="")
            or f"sqlite:///{STATE_DIR / 'kaireon.sqlite3'}"
        )
    }
except (ImproperlyConfigured, KeyError, ValueError) as exc:
    raise ImproperlyConfigured(
        f"DATABASE_URL is not a valid database URL: {exc}"
    ) from None
# SQLite (the embedded default) and PostgreSQL are what the suite runs on.
_SUPPORTED_DATABASES = {"django.db.backends.sqlite3", "django.db.backends.postgresql"}
if DATABASES["default"]["ENGINE"] not in _SUPPORTED_DATABASES:
    raise ImproperlyConfigured(
        "DATABASE_URL is not a valid database URL: use sqlite:///path or "
        "postgres://user:password@host:port/name"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # A drain holds a lease row while other requests read; wait instead of
    # failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Admin login -------------------------------------------------------------
# Django's four password validators: `changepassword` and the admin refuse "1".
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes throttles the admin login: its backend comes first and refuses
# every attempt, the right password included, while the address or the
# username is locked out.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed logins, counted separately per client address and per username within
# the cool-off, that lock that address or that username out for the cool-off.
AXES_FAILURE_LIMIT = _int("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(
    minutes=_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1, maximum=7 * 24 * 60)
)
# Two independent locks: one per address (one client guessing many usernames),
# one per username (many addresses guessing one account).
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
# Attempts are rows in the database: no cache, no Redis command.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# The client address as the cron rate limit sees it (TRUSTED_PROXIES, IPv4-
# mapped addresses unwrapped, IPv6 grouped by /64): one rule for both.
AXES_CLIENT_IP_CALLABLE = "ops.cron.client_ip.throttle_address"
# A success does not clear the failures: a user who knows one password could
# otherwise reset an address's count between guesses at another account.
AXES_RESET_ON_SUCCESS = False
# The lockout answer (429): a page in the admin's look, not plain text.
AXES_LOCKOUT_TEMPLATE = "admin/ops/login_locked.html"
# No "AXES: BEGIN ..." line on every process start (every cron-run command);
# failures and lockouts are still logged, without the username or address.
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Behind HTTPS ---------------------------------------------------------------
# All off by default, so that `./dev run` works on plain http://127.0.0.1. Behind
# a TLS-terminating proxy set the block in .env.example ("Behind HTTPS"): then
# `manage.py check --deploy` has nothing to say.
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", False)
# The header the proxy sets to "https" on requests that reached it over HTTPS
# (e.g. X-Forwarded-Proto). Only when the proxy always sets or strips it: a
# client could otherwise claim HTTPS itself.
_proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="").strip()
if _proxy_ssl_header and not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
    raise ImproperlyConfigured(
        f"SECURE_PROXY_SSL_HEADER must be a header name such as X-Forwarded-Proto, "
        f"got {_proxy_ssl_header!r}"
    )
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
    if _proxy_ssl_header
    else None
)

# --- Redis -----------------------------------------------------------------
# Unset means "the local Redis that `./dev run` starts on the project port".
REDIS_URL = env.str("REDIS_URL", default="") or "redis://127.0.0.1:6390/0"
_redis_parts = urlsplit(REDIS_URL)
if _redis_parts.scheme not in {"redis", "rediss", "unix"}:
    raise ImproperlyConfigured(
        f"REDIS_URL must start with redis://, rediss:// or unix://, got {REDIS_URL!r}"
    )
try:
    _redis_port = _redis_parts.port
except ValueError:
    raise ImproperlyConfigured(f"REDIS_URL has a bad port: {REDIS_URL!r}") from None
REDIS_SOCKET_TIMEOUT_S = _int("REDIS_SOCKET_TIMEOUT_S", 10, minimum=1, maximum=600)


# django-rq reads RQ_QUEUES. The queue *names* live in the database (ops.Queue
# rows); every name resolves to this one connection, so there is no second list
# of queues to keep in step (see ops/queues.py). Every client django-rq hands
# out (get_connection, get_queue, enqueue) shares one metered pool on REDIS_URL:
# its commands are booked under the source "django-rq" (ops/usage/rq_settings.py).
class _EveryQueue(dict):
    """django-rq looks a queue's connection up by name; every name gets REDIS_URL."""

    def __missing__(self, key: str) -> dict[str, Any]:
        return self["default"]


RQ_QUEUES = _EveryQueue(default=rq_queue_settings(_redis_parts.hostname, _redis_port))

# --- Drain defaults ---------------------------------------------------------
DRAIN_MAX_DURATION_CAP_MS = 600_000  # the hard cap; not configurable
DRAIN_MAX_DURATION_MS = _int(
    "DRAIN_MAX_DURATION_MS", 60_000, minimum=1, maximum=DRAIN_MAX_DURATION_CAP_MS
)
DRAIN_MAX_CONCURRENT_QUEUES = _int(
    "DRAIN_MAX_CONCURRENT_QUEUES", 2, minimum=1, maximum=64
)
# A job already running when the time budget ends may finish within this grace;
# past it the drain kills the job's process and records the job as failed.
DRAIN_JOB_GRACE_MS = _int("DRAIN_JOB_GRACE_MS", 60_000, minimum=0, maximum=600_000)
# Added to budget + grace to get the lease's life: past it, a drain that still
# holds the lease is taken to be dead and its run is marked abandoned.
DRAIN_LEASE_MARGIN_MS = _int("DRAIN_LEASE_MARGIN_MS", 30_000, minimum=1_000)
# Which executor runs the jobs: "lean" (a handful of billed commands a job,
# ops/engine/lean_worker.py) or "rq" (RQ's SimpleWorker, with RQ's exact
# started-registry and worker bookkeeping, ~52 commands a job).
DRAIN_EXECUTOR = env.str("DRAIN_EXECUTOR", default="").strip().lower() or "lean"
if DRAIN_EXECUTOR not in ("lean", "rq"):
    raise ImproperlyConfigured(
        f'DRAIN_EXECUTOR must be "lean" or "rq", not {DRAIN_EXECUTOR!r}'
    )
# A tick that finds only scheduled jobs, none due, remembers when the earliest
# is due and stops after its one EXISTS until then. A job scheduled later
# onto an already non-empty scheduled registry, due sooner, is seen at the
# latest after this many seconds (a full look, 1 + 1 + 1 per queue commands).
DRAIN_SCHEDULED_RECHECK_S = _int(
    "DRAIN_SCHEDULED_RECHECK_S", 900, minimum=0, maximum=86_400
)
# Before moving to another Redis, this many drains in a row must
# have processed nothing (manage.py redis_switch_check, the admin's switch page).
REDIS_SWITCH_MIN_EMPTY_DRAINS = _int(
    "REDIS_SWITCH_MIN_EMPTY_DRAINS", 3, minimum=1, maximum=1000
)

# --- Cron endpoint -----------------------------------------------------------
# Environment tokens, accepted in this order. DRAIN_QUEUES_TOKEN and
# CRON_TOKEN only reach /api/v1/cron/drain-queues; CRON_SECRET reaches every
# /api/v1/cron/* endpoint. A token shorter than 16 characters, with surrounding
# whitespace, or equal to another one stops every process here
# (ops/cron/token_rules.py; the system check ops.E001 applies the same rule).
DRAIN_QUEUES_TOKEN = env.str("DRAIN_QUEUES_TOKEN", default="")
CRON_SECRET = env.str("CRON_SECRET", default="")
CRON_TOKEN = env.str("CRON_TOKEN", default="")
_token_problems = env_token_problems(
    {
        "DRAIN_QUEUES_TOKEN": DRAIN_QUEUES_TOKEN,
        "CRON_SECRET": CRON_SECRET,
        "CRON_TOKEN": CRON_TOKEN,
    }
)
if _token_problems:
    raise ImproperlyConfigured(
        "; ".join(message for _, message in _token_problems)
        + ". Unset each variable named, or give it a long random value of its own "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')."
    )
# Requests per minute per client IP on each /api/v1/cron/* endpoint.
CRON_RATE_LIMIT_PER_MINUTE = _int("CRON_RATE_LIMIT_PER_MINUTE", 12, minimum=1)
# Who may set X-Forwarded-For: empty (nobody: the client is REMOTE_ADDR), a
# number of proxy hops in front of the app ("1"), or a comma-separated list of
# proxy addresses/CIDRs ("10.0.0.0/8,127.0.0.1").
TRUSTED_PROXIES = env.str("TRUSTED_PROXIES", default="").strip()
TRUSTED_PROXY_HOPS = 0
TRUSTED_PROXY_NETWORKS: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
if TRUSTED_PROXIES.isdigit():
    TRUSTED_PROXY_HOPS = int(TRUSTED_PROXIES)
elif TRUSTED_PROXIES:
    try:
        TRUSTED_PROXY_NETWORKS = [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in TRUSTED_PROXIES.split(",")
            if part.strip()
        ]
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES must be a hop count or a comma-separated list of "
            f"addresses/CIDRs: {exc}"
        ) from None
# Default overlap of an old token with its replacement after a rotation.
TOKEN_GRACE_HOURS = _int("TOKEN_GRACE_HOURS", 24, minimum=0, maximum=24 * 90)
# Drain runs and other history older than this are deleted by prune.
HISTORY_RETENTION_DAYS = _int("HISTORY_RETENTION_DAYS", 30, minimum=1)

# --- Redis quota ---------------------------------------------------------------
# Billable commands a billing period may spend (Upstash free tier: 500,000/month).
QUOTA_MONTHLY_BUDGET = _int("QUOTA_MONTHLY_BUDGET", 500_000, minimum=1)
# Day of the month the billing period starts (1-28, so every month has it).
QUOTA_PERIOD_START_DAY = _int("QUOTA_PERIOD_START_DAY", 1, minimum=1, maximum=28)
# Percentages of the budget at which the console warns.
try:
    QUOTA_WARN_THRESHOLDS = sorted(
        int(p) for p in env.list("QUOTA_WARN_THRESHOLDS", default=["80", "95"])
    )
except ValueError:
    raise ImproperlyConfigured(
        "QUOTA_WARN_THRESHOLDS must be comma-separated integers, e.g. 80,95"
    ) from None
if not QUOTA_WARN_THRESHOLDS or not all(0 < p <= 100 for p in QUOTA_WARN_THRESHOLDS):
    raise ImproperlyConfigured("QUOTA_WARN_THRESHOLDS must be percentages in 1..100")
# While a quota incident is open, Redis is probed at most once per this many
# seconds (one command); the first success closes the incident.
QUOTA_PROBE_COOLDOWN_S = _int("QUOTA_PROBE_COOLDOWN_S", 600, minimum=1)
# How often each process writes its command counts to the database (0: only at
# drain end and at exit). A process killed hard (SIGKILL, OOM killer) loses the
# counts of at most this many last seconds; a flush with nothing to write costs
# no query, and one with counts one UPDATE per source and hour.
METERING_FLUSH_INTERVAL_S = _int(
    "METERING_FLUSH_INTERVAL_S", 5, minimum=0, maximum=3600
)
# 1: the quota page also reads the Redis server's own INFO commandstats (INFO is
# not billed) and shows every client's commands beside this project's. Only
# meaningful when no other application shares the Redis. 0: off (the default).
QUOTA_SERVER_STATS = _bool("QUOTA_SERVER_STATS", False)
# The application's expected Redis commands a day, for the projection and the
# mode advisor while nothing is measured (no metered application traffic, no
# provider figure). An application request costs ~5-8 commands, so 500 requests/day
# is ~2,500-4,000. 0: assume none.
QUOTA_APP_COMMANDS_PER_DAY = _int("QUOTA_APP_COMMANDS_PER_DAY", 0, minimum=0)

# --- Worker modes and the built-in schedule --------------------------------------
# 1: the console's run command also runs always-on RQ workers (jobs start within
# seconds; idle cost measured in docs/benchmarks.md). 0: no always-on workers;
# jobs run only when drained. The admin can override this at run time (a stored
# setting, applied within a minute); this variable is the default at start.
WORKER_INPROCESS = _bool("WORKER_INPROCESS", False)
# The built-in drain schedule at first start: every N minutes (0 = off). After
# that the admin's stored setting rules.
DRAIN_SCHEDULE_MINUTES = _int("DRAIN_SCHEDULE_MINUTES", 5, minimum=0, maximum=1440)
# Where the missed-tick alarm posts a JSON message when its state changes (empty:
# no webhook), and who gets an email (needs Django's EMAIL_* settings).
ALARM_WEBHOOK_URL = env.str("ALARM_WEBHOOK_URL", default="")
ALARM_EMAILS = env.list("ALARM_EMAILS", default=[])

# Always-on workers block on their queues this long per wake-up (one BLPOP over
# all queues; each wake-up costs 3 commands) ...
ALWAYS_ON_BLOCK_S = _int("ALWAYS_ON_BLOCK_S", 3585, minimum=1, maximum=86_400)
# ... and their supervisor looks for due scheduled jobs this often (1 command
# when none is scheduled), or exactly when the next known one falls due.
ALWAYS_ON_SCHEDULED_SCAN_S = _int("ALWAYS_ON_SCHEDULED_SCAN_S", 300, minimum=1)
# Supervisors refresh their live workers' database rows this often (one UPDATE,
# no Redis command); a row three heartbeats late belongs to a supervisor that
# is gone, and the next drain or supervisor look recovers its jobs
# (docs/reliability.md: the bound is 3x this plus the time to that look).
ALWAYS_ON_HEARTBEAT_S = _int("ALWAYS_ON_HEARTBEAT_S", 60, minimum=1, maximum=3600)

# django-q2 runs the built-in schedule with its database broker: scheduling
# costs no Redis commands (docs/redis-billing.md, tests/scheduling/test_qcluster.py).
Q_CLUSTER = {
    "name": "kaireon",
    "orm": "default",
    "workers": 1,
    # A scheduled drain may take the hard cap + job grace + lease margin.
    "timeout": (DRAIN_MAX_DURATION_CAP_MS + DRAIN_JOB_GRACE_MS + DRAIN_LEASE_MARGIN_MS)
    // 1000
    + 30,
    "retry": (DRAIN_MAX_DURATION_CAP_MS + DRAIN_JOB_GRACE_MS + DRAIN_LEASE_MARGIN_MS)
    // 1000
    + 90,
    "max_attempts": 1,
    # After downtime a missed slot runs once, not once per missed slot.
    "catch_up": False,
    "save_limit": 200,
    # The ORM broker polls the database; every 5 s is plenty for minute schedules.
    "poll": 5,
    "ack_failures": True,
}

# --- Monitoring and alerts ----------------------------------------------------
# Addresses/CIDRs that may read /api/v1/cron/metrics without a token (the client
# address as ops/cron/client_ip.py sees it, TRUSTED_PROXIES applied). Empty:
# a cron-scope token is always needed.
try:
    METRICS_ALLOWED_NETWORKS = [
        ipaddress.ip_network(part.strip(), strict=False)
        for part in env.list("METRICS_ALLOWED_IPS", default=[])
        if part.strip()
    ]
except ValueError as exc:
    raise ImproperlyConfigured(
        f"METRICS_ALLOWED_IPS must be comma-separated addresses/CIDRs: {exc}"
    ) from None
# More failed jobs than this in the last hour sends a "failed jobs" alert.
ALERT_FAILED_JOBS_PER_HOUR = _int(
    "ALERT_FAILED_JOBS_PER_HOUR", 10, minimum=1, maximum=1_000_000
)

# "text" (default) or "json": one JSON object a line with time, level, logger,
# message and, where they apply, run_id, queue, job_id (ops/logcontext.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="").strip().lower() or "text"
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(
        f'LOG_FORMAT must be "text" or "json", not {LOG_FORMAT!r}'
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "ops.logcontext.ContextFilter"},
        "quiet_alarm_routine": {
            "()": "ops.scheduling.routine_logs.QuietAlarmRoutine",
        },
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC with microseconds, from the record's own clock.
            "timestamp": "time",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # RQ logs every job at INFO; in a drain that is noise on stderr.
        "rq.worker": {"level": "WARNING"},
        # django-q2's four INFO lines a minute for the alarm check: DEBUG.
        "django-q": {"filters": ["quiet_alarm_routine"]},
    },
}
