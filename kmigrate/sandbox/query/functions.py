"""Kintone's date functions (TODAY(), FROM_TODAY(5, DAYS), THIS_MONTH(LAST), ...) against a clock."""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta

from .errors import QueryError, syntax_error
from .nodes import Value

_WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
DATE_FUNCTIONS = {
    "NOW",
    "TODAY",
    "YESTERDAY",
    "TOMORROW",
    "FROM_TODAY",
    "THIS_WEEK",
    "LAST_WEEK",
    "NEXT_WEEK",
    "THIS_MONTH",
    "LAST_MONTH",
    "NEXT_MONTH",
    "THIS_YEAR",
    "LAST_YEAR",
    "NEXT_YEAR",
}


def _add_months(d: date, months: int) -> date:
    total = d.year * 12 + (d.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _month_span(first: date, arg: tuple[str, ...], name: str) -> tuple[date, date]:
    days = calendar.monthrange(first.year, first.month)[1]
    if not arg:
        return first, first + timedelta(days=days)
    if len(arg) > 1:
        raise syntax_error(f"{name}() takes at most one argument")
    if arg[0] == "LAST":
        day = days
    elif arg[0].isdigit() and 1 <= int(arg[0]) <= 31:
        day = min(int(arg[0]), days)  # THIS_MONTH(31) in a 30-day month: its last day
    else:
        raise syntax_error(f"{name}() takes a day of the month (1-31) or LAST, not {arg[0]}")
    d = first.replace(day=day)
    return d, d + timedelta(days=1)


def date_function(value: Value, now: datetime) -> tuple[date, date] | datetime:
    """A date function as a half-open span of days, or NOW() as an instant."""
    name, args = value.text, value.args
    today = now.date()
    if name == "NOW":
        no_args(value)
        return now
    if name in ("TODAY", "YESTERDAY", "TOMORROW"):
        no_args(value)
        d = today + timedelta(days={"TODAY": 0, "YESTERDAY": -1, "TOMORROW": 1}[name])
        return d, d + timedelta(days=1)
    if name == "FROM_TODAY":
        if len(args) != 2 or not re.fullmatch(r"-?\d+", args[0]):
            raise syntax_error("FROM_TODAY() takes a whole number and a unit, as in FROM_TODAY(5, DAYS)")
        n, unit = int(args[0]), args[1]
        if unit == "DAYS":
            d = today + timedelta(days=n)
        elif unit == "WEEKS":
            d = today + timedelta(weeks=n)
        elif unit == "MONTHS":
            d = _add_months(today, n)
        elif unit == "YEARS":
            d = _add_months(today, 12 * n)
        else:
            raise syntax_error(f"FROM_TODAY() takes DAYS, WEEKS, MONTHS or YEARS, not {unit}")
        return d, d + timedelta(days=1)
    if name in ("THIS_WEEK", "LAST_WEEK", "NEXT_WEEK"):
        # Kintone's weeks start on Sunday.
        sunday = today - timedelta(days=(today.weekday() + 1) % 7)
        sunday += timedelta(weeks={"THIS_WEEK": 0, "LAST_WEEK": -1, "NEXT_WEEK": 1}[name])
        if not args:
            return sunday, sunday + timedelta(days=7)
        if len(args) > 1 or args[0] not in _WEEKDAYS:
            raise syntax_error(f"{name}() takes a day of the week such as MONDAY")
        d = sunday + timedelta(days=(_WEEKDAYS.index(args[0]) + 1) % 7)
        return d, d + timedelta(days=1)
    if name in ("THIS_MONTH", "LAST_MONTH", "NEXT_MONTH"):
        first = _add_months(today.replace(day=1), {"THIS_MONTH": 0, "LAST_MONTH": -1, "NEXT_MONTH": 1}[name])
        return _month_span(first, args, name)
    if name in ("THIS_YEAR", "LAST_YEAR", "NEXT_YEAR"):
        no_args(value)
        year = today.year + {"THIS_YEAR": 0, "LAST_YEAR": -1, "NEXT_YEAR": 1}[name]
        return date(year, 1, 1), date(year + 1, 1, 1)
    raise unknown_function(value)


def no_args(value: Value) -> None:
    if value.args:
        raise syntax_error(f"{value.text}() takes no arguments")


def unknown_function(value: Value) -> QueryError:
    if value.text == "PRIMARY_ORGANIZATION":
        return syntax_error("the sandbox does not support PRIMARY_ORGANIZATION()")
    return syntax_error(f"unknown function {value.text}()")
