"""Change lists that stay fast over a year of history (issue 15).

The history tables (drain runs, job records, usage rows, worker processes)
grow with every tick and every job. Django's change list, left to its
defaults, costs a query per page that grows with them: an exact COUNT(*) of
the filtered rows, the date hierarchy's DISTINCT over the whole table, sorts on
columns no index covers, a search with `LIKE '%…%'` on every search field, and
OFFSET into deep pages. What replaces each, all bounded whatever the history:

- `BoundedPaginator`: counts at most `MAX_ROWS` rows (a `COUNT(*)` over a
  `LIMIT`ed subquery), so the list shows up to `MAX_PAGES` pages; older rows are
  reached by narrowing (the month filter, a status, a search), never by an
  OFFSET of hundreds of thousands of rows. Unfiltered on PostgreSQL it also
  reads the planner's row estimate (`pg_class.reltuples`: no scan) to say
  "about N in all".
- `BoundedChangeList`: one sort column at a time, and only the columns the
  admin declares sortable (each backed by a (column, id) index); the primary
  key breaks ties in the same direction as the sort, so one index serves a
  column both ways (Django appends a descending pk whatever the direction,
  which no single index can serve).
- `month_filter(field)`: the date hierarchy's job (reach an old month) from two
  indexed lookups (the newest and the oldest value), not a DISTINCT over the
  table.
- `IndexedSearchMixin`: a bounded search: an exact value (a run's public id,
  an RQ job id) through its index, else a substring among the newest
  `search_scope` rows of the filtered list, read through the index of the
  list's own order (the pg_trgm indexes of migration 0015 are dropped by
  0021_scale_search: with the scope they cost more than they saved).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.paginator import EmptyPage, Paginator
from django.db import connections
from django.db.models import Max, Min, Q, QuerySet
from django.db.models.expressions import OrderBy
from django.http import HttpRequest
from django.utils import timezone

# 100 pages of Django's default 100 rows.
MAX_PAGES = 100
# The shortest substring a search looks for (a shorter one matches nearly
# every row: nothing to find).
MIN_CONTAINS = 3


class BoundedPaginator(Paginator):
    """A paginator whose count reads at most `MAX_PAGES` pages of rows.

    `capped` says the list holds more rows than that; `estimated_total` is
    PostgreSQL's estimate of the whole table's rows (None when filtered, or
    on SQLite), for the page's "about N in all"."""

    capped = False
    estimated_total: int | None = None
    max_pages: int | None = None  # None: MAX_PAGES

    @property
    def max_rows(self) -> int:
        return self.per_page * (self.max_pages or MAX_PAGES)

    @property  # Django's is a cached_property; computed once per page below
    def count(self) -> int:  # type: ignore[override]
        cached = self.__dict__.get("_bounded_count")
        if cached is not None:
            return int(cached)
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        # COUNT(*) FROM (SELECT … LIMIT max_rows + 1): stops at the cap.
        # order_by(): the order does not change a count, and dropping it
        # leaves the planner free to count through the filter's own index.
        found = queryset.order_by()[: self.max_rows + 1].count()
        self.capped = found > self.max_rows
        if self.capped:
            self.estimated_total = _estimate(queryset)
        count = min(found, self.max_rows)
        self.__dict__["_bounded_count"] = count
        return count

    def validate_number(self, number: Any) -> int:
        """A page past the last one shows the last one (the pages stop at
        the cap; a link to an older page must not end in an error)."""
        try:
            return super().validate_number(number)
        except EmptyPage:
            if int(number) > 1:
                return self.num_pages
            raise


def _estimate(queryset: QuerySet[Any]) -> int | None:
    """The planner's row estimate of the unfiltered table (PostgreSQL only:
    one catalogue read, no scan); None when filtered or elsewhere."""
    if queryset.query.where or queryset.db is None:
        return None
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    # -1 until the table was first analysed: unknown, not "none".
    return int(row[0]) if row and row[0] >= 0 else None


def _descending(part: Any) -> bool:
    if isinstance(part, str):
        return part.startswith("-")
    if isinstance(part, OrderBy):
        return part.descending
    return False


class BoundedChangeList(ChangeList):
    """Sorts one declared column at a time, ties broken by the primary key in
    the same direction (see the module docstring)."""

    def get_queryset(
        self, request: HttpRequest, exclude_parameters: Any = None
    ) -> QuerySet[Any]:
        self.params[ORDER_VAR] = self._one_sortable(self.params.get(ORDER_VAR, ""))
        if not self.params[ORDER_VAR]:
            del self.params[ORDER_VAR]
        return super().get_queryset(request, exclude_parameters)

    def _one_sortable(self, value: str) -> str:
        """`o=3.-1` keeps its first part naming a sortable column ("-3")."""
        for part in value.split("."):
            _, _, index = part.rpartition("-")
            if not (index.isascii() and index.isdigit()):
                continue
            position = int(index)
            if position < len(self.list_display) and (
                self.list_display[position] in self.sortable_by
            ):
                return part
        return ""

    def get_ordering_field(self, field_name: Any) -> Any:
        """A column the admin defines (a method with its own `ordering`) sorts
        by that ordering even when the model has a relation of the same name:
        Django looks for a model field first, so the run list's "jobs" column
        (ordering total_processed) sorted by the reverse relation to the job
        records, a join of 10,000,000 rows (8 s, docs/benchmarks.md)."""
        if isinstance(field_name, str):
            attr = getattr(self.model_admin, field_name, None)
            order = getattr(attr, "admin_order_field", None)
            if callable(attr) and order:
                return order
        return super().get_ordering_field(field_name)

    def _get_deterministic_ordering(self, ordering: Sequence[Any]) -> list[Any]:
        ordering = super()._get_deterministic_ordering(ordering)
        if (
            len(ordering) >= 2
            and ordering[-1] == "-pk"
            and not _descending(ordering[0])
        ):
            ordering[-1] = "pk"
        return ordering


class BoundedListMixin:
    """What a history admin sets to use the above (`paginator`, change list,
    no full count, no date hierarchy)."""

    paginator = BoundedPaginator
    show_full_result_count = False
    date_hierarchy = None
    # Pages a list offers (None: MAX_PAGES). A list whose deep OFFSET costs
    # more (wide rows, a join per row) offers fewer.
    list_max_pages: int | None = None

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: Any,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        paginator = self.paginator(queryset, per_page, orphans, allow_empty_first_page)
        if isinstance(paginator, BoundedPaginator):
            paginator.max_pages = self.list_max_pages
        return paginator

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BoundedChangeList


# --- The month filter ---------------------------------------------------------


def month_filter(field: str, title: str | None = None) -> type[admin.SimpleListFilter]:
    """A filter offering each month from the newest row's back to the oldest
    row's (two indexed MIN/MAX lookups), as `<field>__gte`/`__lt` ranges."""

    class MonthFilter(admin.SimpleListFilter):
        parameter_name = f"{field}_month"

        def lookups(
            self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
        ) -> list[tuple[str, str]]:
            bounds = model_admin.get_queryset(request).aggregate(
                first=Min(field), last=Max(field)
            )
            if bounds["first"] is None:
                return []
            first = timezone.localtime(bounds["first"])
            last = timezone.localtime(bounds["last"])
            months: list[tuple[str, str]] = []
            year, month = last.year, last.month
            while (year, month) >= (first.year, first.month):
                months.append((f"{year:04d}-{month:02d}", f"{year:04d}-{month:02d}"))
                year, month = (year, month - 1) if month > 1 else (year - 1, 12)
            return months

        def queryset(
            self, request: HttpRequest, queryset: QuerySet[Any]
        ) -> QuerySet[Any]:
            start = _month_start(self.value())
            if start is None:
                return queryset
            end = start.replace(
                year=start.year + (start.month == 12), month=start.month % 12 + 1
            )
            return queryset.filter(**{f"{field}__gte": start, f"{field}__lt": end})

    MonthFilter.title = title or f"{field} (month)"
    MonthFilter.__name__ = f"{field.title()}MonthFilter"
    return MonthFilter


def _month_start(value: str | None) -> datetime | None:
    """`2026-03` -> its first instant in the current time zone; None for
    anything else (a bad value lists everything, it does not fail)."""
    if not value or len(value) != 7 or value[4] != "-":
        return None
    year, month = value[:4], value[5:]
    if not (year.isdigit() and month.isdigit() and 1 <= int(month) <= 12):
        return None
    if int(year) < 1:
        return None
    return timezone.make_aware(datetime(int(year), int(month), 1))


# --- Search -------------------------------------------------------------------


class IndexedSearchMixin:
    """The search box, bounded whatever the history.

    `search_exact`: fields matched exactly (an index on each), in any row;
    `search_uuid`: a UUID field matched when the term is a UUID, in any row;
    `search_contains`: text fields matched as a substring, case-insensitive,
    among the newest `search_scope` rows of what the filters select. An exact
    match wins: a term that is a job id (or a run id) lists that row, not the
    rows that merely contain it. The term is one value (not split on spaces:
    "admin alice" is one caller).

    Why a scope: a common substring ("10.0.3", "card declined") matches tens
    of thousands of rows of a year's history, a rare one a handful, and the
    list shows the newest first. A pg_trgm index finds the rare ones at once
    but must read every match of a common one (344 ms for 400,000 job
    records, docs/benchmarks.md); walking the newest rows until a page is full
    is quick for a common one but reads the whole table for a rare one. The
    scope bounds both: the newest `search_scope` rows in the list's own order
    (`search_scope_field`, an indexed column the list sorts by), found by one
    index lookup (the row `search_scope` places down), then read through that
    index's range. Narrowing with the filters (a month, a status) moves the
    scope there."""

    search_exact: tuple[str, ...] = ()
    search_uuid: str | None = None
    search_contains: tuple[str, ...] = ()
    search_scope: int = 20_000
    # Newest first along this column (an index on it, or leading one).
    search_scope_field: str = "pk"

    def _scope_floor(self, queryset: QuerySet[Any]) -> Any:
        """The `search_scope_field` value of the row `search_scope` places
        down the filtered list, newest first (an OFFSET into that column's
        index, not into the table); None when the list is shorter."""
        field = self.search_scope_field
        return (
            queryset.order_by(f"-{field}")
            .values_list(field, flat=True)[self.search_scope : self.search_scope + 1]
            .first()
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()[:200]
        if not term:
            return queryset, False
        exact = Q()
        for name in self.search_exact:
            exact |= Q(**{name: term})
        if self.search_uuid:
            with contextlib.suppress(ValueError):  # not a UUID: cannot be one
                exact |= Q(**{self.search_uuid: uuid.UUID(term)})
        # Asked apart (one index look), not OR-ed with the substring: an OR
        # of the two lets the planner walk the whole table for a rare term.
        if exact and queryset.filter(exact).exists():
            return queryset.filter(exact), False
        if len(term) < MIN_CONTAINS or not self.search_contains:
            return queryset.none(), False
        contains = Q()
        for name in self.search_contains:
            contains |= Q(**{f"{name}__icontains": term})
        floor = self._scope_floor(queryset)
        if floor is not None:
            contains &= Q(**{f"{self.search_scope_field}__gte": floor})
        return queryset.filter(contains), False
