"""The cron tokens in the console: the token list with the environment
credentials, rotation (the new token shown once), revocation, and the
"Scheduler setup" page with its test drain.

Looking and acting are separate permissions, as for drains: `view_tokenversion`
shows the list and the recipes; `ops.rotate_tokenversion` rotates and revokes;
the test drain also needs `ops.drain_queues`.

Rotation is POST-redirect-GET, so that a reload or the back button never
rotates again: the POST rotates and redirects to the version's "new token"
page, which shows the token once. Between the two the token waits in the
user's server-side session, and only there (never in a URL, a message, a log
entry or a column); the GET takes it out (a reload then says it was shown and
how to get another), and one not fetched within NEW_TOKEN_MAX_AGE_S is never
shown. The page that shows it is `no-store`. Environment tokens are only ever
reported as set or not set.

The test drain runs in the background like "Drain now" (ops/engine/background.py):
the POST starts it and redirects to the setup page for that run, which
follows it and then shows the endpoint's answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ops.console.admin.common import DRAIN_PERMISSION, LINE_BREAK, can_drain
from ops.cron import recipes, tokens
from ops.engine import background
from ops.engine.drain_options import DrainOptionError, parse_options
from ops.engine.results import drain_answer, summary_line
from ops.models import DrainRun, TokenVersion

ROTATE_PERMISSION = "ops.rotate_tokenversion"
# The bound of manage.py rotate_token and of the TOKEN_GRACE_HOURS setting.
MAX_GRACE_HOURS = 24 * 90
# Short: a test shows that the endpoint's drain works, it does not clear queues.
TEST_DRAIN_BUDGET_MS = 10_000
# Where a new token waits between the rotation's POST and the GET showing it.
NEW_TOKEN_SESSION_KEY = "ops.new_token"
# A new token the GET did not fetch within this long is dropped unshown: the
# rotation's answer was lost, and rotating again is the way out.
NEW_TOKEN_MAX_AGE_S = 600

STATE_COLOURS = {
    TokenVersion.State.ACTIVE: "#15803d",
    TokenVersion.State.GRACE: "#b45309",
    TokenVersion.State.EXPIRED: "#6b7280",
    TokenVersion.State.REVOKED: "#b91c1c",
}


def can_rotate(request: HttpRequest) -> bool:
    return request.user.has_perm(ROTATE_PERMISSION)


def when(moment: datetime | None, *, zone: bool = True) -> str:
    """A time as the token pages show it: to the minute, with the zone unless
    a list column's header gives it (the list must fit without scrolling)."""
    if moment is None:
        return "-"
    return timezone.localtime(moment).strftime(
        "%Y-%m-%d %H:%M %Z" if zone else "%Y-%m-%d %H:%M"
    )


def _valid(queryset: QuerySet[TokenVersion], now: datetime) -> QuerySet[TokenVersion]:
    """The rows tokens.authenticate accepts: not revoked, not past their grace."""
    return queryset.filter(revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )


# --- Environment credentials --------------------------------------------------


@dataclass(frozen=True)
class EnvCredential:
    """What the console may say about an environment token: never its value,
    nor its length, nor any part of it."""

    position: int
    variable: str
    scope: str
    scope_label: str
    status: str  # "set", "not set" or "refused"


def environment_credentials() -> list[EnvCredential]:
    found = []
    refused = tokens.refused_env_tokens()
    for position, (variable, scope) in enumerate(tokens.ENV_TOKENS, start=1):
        value = getattr(settings, variable, "")
        if not value:
            status = "not set"
        elif variable in refused:
            status = "refused"  # as tokens.authenticate does (and check ops.E001)
        else:
            status = "set"
        found.append(
            EnvCredential(
                position=position,
                variable=variable,
                scope=scope,
                scope_label=TokenVersion.Scope(scope).label,
                status=status,
            )
        )
    return found


# --- Rotation -----------------------------------------------------------------


class RotateForm(forms.Form):
    scope = forms.ChoiceField(
        choices=TokenVersion.Scope.choices,
        help_text="A drain token opens /api/v1/cron/drain-queues only: give "
        "schedulers that one. A cron token opens every /api/v1/cron/* endpoint.",
    )
    grace_hours = forms.IntegerField(
        label="Grace (hours)",
        min_value=0,
        max_value=MAX_GRACE_HOURS,
        help_text=f"How long the versions valid now keep working, so the scheduler "
        f"can be switched to the new token without rejected calls. 0 rejects them "
        f"at once; at most {MAX_GRACE_HOURS}.",
    )
    label = forms.CharField(
        max_length=100,
        required=False,
        help_text="A note for the list, e.g. where the token goes: "
        "'cron-job.org'. Never the token.",
    )


@dataclass(frozen=True)
class _ScopeVersions:
    """A scope's valid versions and when each would stop working."""

    scope: str
    label: str
    rows: list[tuple[TokenVersion, datetime]]


def _after_rotation(grace: timedelta, now: datetime) -> list[_ScopeVersions]:
    # The same rule as tokens.rotate: a version keeps the earlier of its
    # current expiry and now + grace.
    cutoff = now + grace
    rows = list(
        _valid(TokenVersion.objects.all(), now)
        .select_related("created_by")
        .order_by("scope", "-version")
    )
    return [
        _ScopeVersions(
            scope=scope,
            label=label,
            rows=[
                (row, min(row.expires_at, cutoff) if row.expires_at else cutoff)
                for row in rows
                if row.scope == scope
            ],
        )
        for scope, label in TokenVersion.Scope.choices
    ]


# --- The admin ----------------------------------------------------------------


@admin.register(TokenVersion)
class TokenVersionAdmin(admin.ModelAdmin):
    list_display = (
        "scope_name",
        "version_name",
        "label",
        "prefix_display",
        "state_badge",
        "created_cell",
        "last_used",
        "uses",
    )
    list_display_links = ("version_name",)
    # No filter sidebar and no sort widgets on the narrow columns: a few
    # versions per scope (listed by scope, newest first), and the columns need
    # the room.
    sortable_by = ("created_cell", "last_used", "uses")
    list_select_related = ("created_by",)
    search_fields = ("label", "prefix")
    # Every field but the digest, which no page shows.
    fields = (
        "scope_name",
        "version_name",
        "label",
        "prefix_display",
        "state_badge",
        "created",
        "created_by",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "last_used_ip",
        "use_count",
    )
    readonly_fields = fields

    # Versions come only from rotation (a token must be generated, and shown
    # once); they change only by revocation; they are kept as the audit trail.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: TokenVersion | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: TokenVersion | None = None
    ) -> bool:
        return False

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        # The revoke column only for those who may revoke.
        if can_rotate(request):
            return (*self.list_display, "revoke_link")
        return self.list_display

    # --- cells ---

    @admin.display(description="scope", ordering="scope")
    def scope_name(self, obj: TokenVersion) -> SafeString:
        return format_html(
            '<span title="{}">{}</span>', obj.get_scope_display(), obj.scope
        )

    @admin.display(description="version", ordering="version")
    def version_name(self, obj: TokenVersion) -> SafeString:
        return format_html("v{}", obj.version)

    @admin.display(description="token starts with")
    def prefix_display(self, obj: TokenVersion) -> SafeString:
        return format_html("<code>{}…</code>", obj.prefix)

    @admin.display(description=f"state (times {settings.TIME_ZONE})")
    def state_badge(self, obj: TokenVersion) -> SafeString:
        state = obj.state()
        badge = format_html(
            '<span class="ops-badge ops-token-{}" style="background:{}" '
            'title="{}">{}</span>',
            state,
            STATE_COLOURS[state],
            TokenVersion.State(state).label,
            state,
        )
        notes = {
            TokenVersion.State.GRACE: ("in grace until", obj.expires_at),
            TokenVersion.State.EXPIRED: ("expired", obj.expires_at),
            TokenVersion.State.REVOKED: ("revoked", obj.revoked_at),
        }
        if state not in notes:
            return badge
        words, moment = notes[state]
        # The time never breaks; the words may, so the column stays narrow.
        note = format_html(
            '{} <span class="ops-nowrap">{}</span>', words, when(moment, zone=False)
        )
        return format_html(
            '{}{}<span class="ops-token-note">{}</span>', badge, LINE_BREAK, note
        )

    @admin.display(description=f"created ({settings.TIME_ZONE})", ordering="created")
    def created_cell(self, obj: TokenVersion) -> SafeString:
        # No user: made by manage.py rotate_token, or the user was deleted.
        by = obj.created_by.get_username() if obj.created_by else "manage.py"
        return format_html("{}{}by {}", when(obj.created, zone=False), LINE_BREAK, by)

    @admin.display(
        description=f"last used ({settings.TIME_ZONE})", ordering="last_used_at"
    )
    def last_used(self, obj: TokenVersion) -> SafeString:
        if obj.last_used_at is None:
            return format_html('<span class="quiet">{}</span>', "never")
        return format_html(
            "{}{}from {}",
            when(obj.last_used_at, zone=False),
            LINE_BREAK,
            obj.last_used_ip or "?",
        )

    @admin.display(description="uses", ordering="use_count")
    def uses(self, obj: TokenVersion) -> SafeString:
        return format_html("{}", obj.use_count)

    @admin.display(description="")
    def revoke_link(self, obj: TokenVersion) -> SafeString:
        if obj.revoked_at is not None:
            return format_html("{}", "")
        url = reverse("admin:ops_tokenversion_revoke", args=[obj.pk])
        return format_html('<a href="{}" class="ops-revoke-link">Revoke</a>', url)

    # --- pages ---

    def _links(self, request: HttpRequest) -> dict[str, Any]:
        return {
            "can_rotate": can_rotate(request),
            "rotate_url": reverse("admin:ops_tokenversion_rotate"),
            "setup_url": reverse("admin:ops_tokenversion_scheduler_setup"),
            "list_url": reverse("admin:ops_tokenversion_changelist"),
            "has_view_permission": self.has_view_permission(request),
        }

    def _page(
        self, request: HttpRequest, title: str, template: str, **context: Any
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "title": title,
                "opts": self.opts,
                **self._links(request),
                **context,
            },
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request,
            {
                **(extra_context or {}),
                **self._links(request),
                "title": "Cron tokens",
                "env_credentials": environment_credentials(),
            },
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().change_view(
            request,
            object_id,
            form_url,
            {**(extra_context or {}), **self._links(request)},
        )

    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: "<path:object_id>/" would swallow these.
        wrap = self.admin_site.admin_view
        return [
            path("rotate/", wrap(self.rotate_view), name="ops_tokenversion_rotate"),
            path(
                "scheduler-setup/",
                wrap(self.scheduler_setup_view),
                name="ops_tokenversion_scheduler_setup",
            ),
            path(
                "scheduler-setup/test/<int:run_id>/",
                wrap(self.scheduler_setup_view),
                name="ops_tokenversion_scheduler_test",
            ),
            path(
                "<int:object_id>/new-token/",
                wrap(self.new_token_view),
                name="ops_tokenversion_new_token",
            ),
            path(
                "<int:object_id>/revoke/",
                wrap(self.revoke_view),
                name="ops_tokenversion_revoke",
            ),
            *super().get_urls(),
        ]

    def rotate_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the form and what will happen. POST: rotate, then redirect to
        the page showing the new token once."""
        if not can_rotate(request):
            raise PermissionDenied
        now = timezone.now()
        if request.method == "POST":
            form = RotateForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                row, token = tokens.rotate(
                    scope=data["scope"],
                    grace=timedelta(hours=data["grace_hours"]),
                    label=data["label"],
                    created_by=request.user,
                )
                # The history entry names the version, never the token.
                self.log_addition(
                    request, row, f"Rotated: {row.scope} v{row.version} ({row.prefix}…)"
                )
                request.session[NEW_TOKEN_SESSION_KEY] = {
                    "pk": row.pk,
                    "token": token,
                    "grace_hours": data["grace_hours"],
                    "at": time.time(),
                }
                return HttpResponseRedirect(
                    reverse("admin:ops_tokenversion_new_token", args=[row.pk])
                )
        else:
            form = RotateForm(
                initial={
                    "scope": TokenVersion.Scope.DRAIN,
                    "grace_hours": settings.TOKEN_GRACE_HOURS,
                }
            )
        # Explain with the grace the form holds, when it is a valid number.
        grace_hours = settings.TOKEN_GRACE_HOURS
        grace_is_default = True
        if form.is_bound and not form.has_error("grace_hours"):
            grace_hours = form.cleaned_data["grace_hours"]
            grace_is_default = False
        return self._page(
            request,
            "Rotate a cron token",
            "admin/ops/tokenversion/rotate.html",
            form=form,
            grace_hours=grace_hours,
            grace_is_default=grace_is_default,
            scopes=_after_rotation(timedelta(hours=grace_hours), now),
        )

    def new_token_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The new token of a rotation, once: the first GET after the rotation
        takes it out of the session; any later one (a reload, the back and
        forward buttons) says it was shown, and never rotates."""
        if not can_rotate(request):
            raise PermissionDenied
        row = get_object_or_404(TokenVersion, pk=object_id)
        pending = request.session.get(NEW_TOKEN_SESSION_KEY)
        token = None
        if isinstance(pending, dict) and pending.get("pk") == row.pk:
            del request.session[NEW_TOKEN_SESSION_KEY]
            if time.time() - float(pending.get("at", 0)) <= NEW_TOKEN_MAX_AGE_S:
                token = pending.get("token")
        if token is None:
            response = self._page(
                request,
                f"{row.scope} token v{row.version}: already shown",
                "admin/ops/tokenversion/token_shown.html",
                row=row,
                revoke_url=reverse("admin:ops_tokenversion_revoke", args=[row.pk]),
            )
        else:
            response = self._render_new_token(
                request, row, token, int(pending.get("grace_hours", 0))
            )
        # admin_view adds this too; the token page must not rely on that.
        add_never_cache_headers(response)
        return response

    def _render_new_token(
        self, request: HttpRequest, row: TokenVersion, token: str, grace_hours: int
    ) -> TemplateResponse:
        previous = list(
            TokenVersion.objects.filter(scope=row.scope)
            .exclude(pk=row.pk)
            .order_by("-version")
        )
        response = self._page(
            request,
            f"New {row.scope} token (v{row.version})",
            "admin/ops/tokenversion/new_token.html",
            row=row,
            token=token,
            grace_hours=grace_hours,
            previous=[(old, old.state(), when(old.expires_at)) for old in previous],
        )
        return response

    def revoke_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """GET: a confirmation. POST: revoke, then back to the list."""
        if not can_rotate(request):
            raise PermissionDenied
        row = get_object_or_404(TokenVersion, pk=object_id)
        back = (
            reverse("admin:ops_tokenversion_changelist")
            if self.has_view_permission(request)
            else reverse("admin:index")
        )
        if request.method == "POST":
            if row.revoked_at is not None:
                self.message_user(
                    request,
                    f"{row} was already revoked on {when(row.revoked_at)}; "
                    "nothing changed.",
                    messages.INFO,
                )
            else:
                row.revoke()
                self.log_change(request, row, "Revoked.")
                self.message_user(
                    request,
                    f"Revoked {row}: calls with it are rejected from now on.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(back)
        now = timezone.now()
        others = _valid(TokenVersion.objects.filter(scope=row.scope), now).exclude(
            pk=row.pk
        )
        return self._page(
            request,
            f"Revoke {row.scope} v{row.version}",
            "admin/ops/tokenversion/revoke.html",
            row=row,
            state=row.state(now),
            state_badge=self.state_badge(row),
            last_valid=row.is_valid(now) and not others.exists(),
            # Environment tokens that open what this version opened.
            fallbacks=[
                credential.variable
                for credential in environment_credentials()
                if credential.status == "set"
                and (
                    row.scope == TokenVersion.Scope.DRAIN
                    or credential.scope == TokenVersion.Scope.CRON
                )
            ],
            back_url=back,
        )

    def scheduler_setup_view(
        self, request: HttpRequest, run_id: int | None = None
    ) -> HttpResponse:
        """Recipes for the external schedulers, and a test drain: the POST
        starts it in the background and redirects to this page for its run
        (`run_id`), which follows it and then shows the endpoint's answer."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        may_drain = can_drain(request)
        test: dict[str, Any] | None = None
        if request.method == "POST":
            if not may_drain:
                raise PermissionDenied
            return self._test_drain(request)
        if run_id is not None:
            if not may_drain:
                raise PermissionDenied
            test = self._test_result(request, get_object_or_404(DrainRun, pk=run_id))
        # Absolute, as this request reached the site: the URL a scheduler calls.
        endpoint = request.build_absolute_uri(reverse("cron-drain-queues"))
        return self._page(
            request,
            "Scheduler setup",
            "admin/ops/scheduler_setup.html",
            endpoint_url=endpoint,
            plain_http=endpoint.startswith("http://"),
            header=recipes.HEADER,
            placeholder=recipes.PLACEHOLDER,
            interval_minutes=recipes.INTERVAL_MINUTES,
            recipes=recipes.build_recipes(endpoint),
            can_test=may_drain,
            test=test,
            test_budget_ms=TEST_DRAIN_BUDGET_MS,
            drain_permission=DRAIN_PERMISSION,
            last_cron_run=DrainRun.objects.filter(
                trigger=DrainRun.Trigger.CRON
            ).first(),
        )

    def _test_drain(self, request: HttpRequest) -> HttpResponse:
        # The endpoint's service, not the endpoint: the console cannot know the
        # scheduler's token, so it cannot make the scheduler's call.
        setup_url = reverse("admin:ops_tokenversion_scheduler_setup")
        try:
            options = parse_options(max_duration_ms=TEST_DRAIN_BUDGET_MS)
        except DrainOptionError as exc:
            self.message_user(
                request, f"The test drain could not start: {exc}", messages.ERROR
            )
            return HttpResponseRedirect(setup_url)
        started = background.start(
            trigger=DrainRun.Trigger.ADMIN,
            options=options,
            requested_by=request.user,
            caller=f"scheduler setup test by {request.user}",
        )
        if started.run is None:
            running = started.running
            self.message_user(
                request,
                format_html(
                    "A drain is already running{}: no test drain was started; "
                    "send one when it has ended.",
                    format_html(" ({})", self._run_ref(request, running))
                    if running
                    else "",
                ),
                messages.WARNING,
            )
            return HttpResponseRedirect(setup_url)
        self.log_addition(
            request,
            started.run,
            f"Test drain from Scheduler setup: started in the background "
            f"(time budget {TEST_DRAIN_BUDGET_MS} ms)",
        )
        url = reverse("admin:ops_tokenversion_scheduler_test", args=[started.run.pk])
        return HttpResponseRedirect(f"{url}#ops-test-drain")

    def _run_ref(self, request: HttpRequest, run: DrainRun) -> SafeString:
        """A run, linked for those who may see runs."""
        if request.user.has_perm("ops.view_drainrun"):
            url = reverse("admin:ops_drainrun_change", args=[run.pk])
            return format_html('<a href="{}">{}</a>', url, run)
        return format_html("{}", run)

    def _test_result(self, request: HttpRequest, run: DrainRun) -> dict[str, Any]:
        """A test drain as the page shows it: followed while it runs, then the
        endpoint's answer. Database only."""
        if run.status == DrainRun.Status.QUEUED:
            background.fail_stale(run)
        test: dict[str, Any] = {
            "run": run,
            "run_ref": self._run_ref(request, run),
            "live": run.is_active,
            "progress_url": reverse("admin:ops_drainrun_progress", args=[run.pk]),
        }
        if not run.is_active:
            status, body = drain_answer(run)
            test.update(
                status=status,
                body=json.dumps(body, indent=2),
                summary=summary_line(run, label=True),
            )
        return test
