"""Turn a dashboard query into the SQL ClickHouse receives, the way Grafana and the plugin do.

Grafana cannot run where the dashboards are tested, benchmarked and drawn, so this module
replays the three steps a query of the ``grafana-clickhouse-datasource`` plugin (4.x) goes
through before it reaches ClickHouse, in their order:

1. ``$__conditionalAll(condition, $var)`` (plugin frontend, ``applyConditionalAll``): the
   condition, or ``1=1`` when the variable's value is All (``$__all``) or empty.
2. Template variables (Grafana's ``templateSrv.replace`` with the plugin's format
   function): ``$var``, ``${var}`` and ``${var:format}``. A list (a multi-value variable,
   or All without a custom all value) becomes ``'a','b'``; a single value is inserted as
   is; ``:singlequote`` quotes and escapes each value; ``:raw`` joins with commas.
3. Backend macros (the plugin's ``pkg/macros`` through ``sqlds``): ``$__timeFilter(col)``
   -> ``col >= toDateTime(<from>) AND col <= toDateTime(<to>)``, ``$__timeFilter_ms``,
   ``$__fromTime``/``$__toTime`` (and ``_ms``), ``$__dateFilter``, ``$__timeInterval(col)``
   -> ``toStartOfInterval(toDateTime(col), INTERVAL <s> second)``, ``$__timeInterval_ms``
   and ``$__interval_s``. A macro name ends at a word boundary and takes arguments only
   when ``(`` follows it immediately (sqlds v4).

Anything else that looks like a macro is an error here, so a dashboard cannot use one the
plugin does not know.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["ALL", "QueryContext", "expand", "grafana_interval"]

ALL: Final = "$__all"
"""The value Grafana stores for a variable whose selection is All."""

VariableValue = str | Sequence[str]


@dataclass(frozen=True, slots=True)
class QueryContext:
    """What Grafana knows when it runs a query: the time range, the interval, the variables.

    ``variables`` maps a name to its current value: a string for a single-value variable,
    a list for a multi-value one, or :data:`ALL`. ``all_values`` gives, per variable, the
    options that All stands for where a query spells the variable out.
    """

    start: datetime
    end: datetime
    interval: timedelta = timedelta(hours=1)
    variables: Mapping[str, VariableValue] | None = None
    all_values: Mapping[str, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("time range bounds must be timezone-aware")


def expand(sql: str, context: QueryContext) -> str:
    """``sql`` as ClickHouse would receive it from the plugin in ``context``."""
    variables = dict(context.variables or {})
    sql = _conditional_all(sql, variables)
    sql = _template_variables(sql, variables, dict(context.all_values or {}))
    return _backend_macros(sql, context)


# Grafana's interval rounding (rangeutil.roundInterval): upper bound (ms) -> interval (ms).
_ROUNDING: Final = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1_500, 1_000), (3_500, 2_000),
    (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000), (45_000, 30_000),
    (90_000, 60_000), (210_000, 120_000), (450_000, 300_000), (750_000, 600_000), (1_050_000, 900_000),
    (1_500_000, 1_200_000), (2_700_000, 1_800_000), (5_400_000, 3_600_000), (9_000_000, 7_200_000),
    (16_200_000, 10_800_000), (30_600_000, 21_600_000), (86_400_000, 43_200_000),
    (604_800_000, 86_400_000), (1_814_400_000, 604_800_000), (3_628_800_000, 2_592_000_000),
)  # fmt: skip


def grafana_interval(
    start: datetime, end: datetime, max_data_points: int, min_interval: timedelta | None = None
) -> timedelta:
    """The ``$__interval`` Grafana gives a panel: range / max data points, rounded to a nice
    step, no less than the panel's min interval."""
    raw_ms = (end - start).total_seconds() * 1000 / max_data_points
    rounded = next((ms for bound, ms in _ROUNDING if raw_ms < bound), 31_536_000_000)
    interval = timedelta(milliseconds=rounded)
    return max(interval, min_interval) if min_interval else interval


# -- step 1: $__conditionalAll ---------------------------------------------------------------

_CONDITIONAL_ALL: Final = "$__conditionalAll("
_VARIABLE_IN_ARG: Final = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")


def _macro_args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """Arguments of the bracketed list starting at ``open_paren`` and the index after it."""
    depth = 0
    args: list[str] = []
    start = open_paren + 1
    for index in range(open_paren, len(sql)):
        char = sql[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:index])
                return args, index + 1
        elif char == "," and depth == 1:
            args.append(sql[start:index])
            start = index + 1
    raise ValueError(f"unbalanced brackets after {sql[open_paren - 20 : open_paren + 20]!r}")


def _conditional_all(sql: str, variables: Mapping[str, VariableValue]) -> str:
    # Like the plugin: innermost-last first (lastIndexOf), exactly two arguments.
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        args, end = _macro_args(sql, index + len(_CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            raise ValueError(f"$__conditionalAll takes 2 arguments, got {len(args)}: {args}")
        condition, variable_arg = args
        match = _VARIABLE_IN_ARG.search(variable_arg.strip())
        if match is None:
            raise ValueError(f"$__conditionalAll's second argument names no variable: {variable_arg!r}")
        name = match.group(0)
        if name not in variables:
            raise KeyError(f"$__conditionalAll refers to unknown variable ${name}")
        value = variables[name]
        current = value if isinstance(value, str) else ",".join(value)
        phrase = "1=1" if current in ("", ALL) else condition
        sql = sql[:index] + phrase + sql[end:]
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


# -- step 2: template variables ------------------------------------------------------------------

# Grafana's variable syntax: $name, [[name:format]], ${name.fieldPath:format}.
_VARIABLE: Final = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def _datasource_format(value: VariableValue) -> str:
    # The plugin's format(): arrays become 'a','b' (unescaped); scalars stay as they are.
    if isinstance(value, str):
        return value
    return "'" + "','".join(value) + "'"


def _singlequote(value: VariableValue) -> str:
    values = [value] if isinstance(value, str) else list(value)
    return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)


def _sqlstring(value: VariableValue) -> str:
    values = [value] if isinstance(value, str) else list(value)
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def _raw(value: VariableValue) -> str:
    return value if isinstance(value, str) else ",".join(value)


_FORMATS: Final[dict[str, Callable[[VariableValue], str]]] = {
    "singlequote": _singlequote,
    "sqlstring": _sqlstring,
    "raw": _raw,
    "csv": _raw,
}


def _template_variables(
    sql: str, variables: Mapping[str, VariableValue], all_values: Mapping[str, Sequence[str]]
) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        if name not in variables:
            if name.startswith("__"):
                return match.group(0)  # a macro or a built-in Grafana leaves to the plugin
            raise KeyError(f"query refers to unknown variable ${name}")
        value = variables[name]
        if value == ALL:
            if name not in all_values:
                raise KeyError(f"${name} is All but no values were given for it")
            value = list(all_values[name])
        fmt = match.group(3) or match.group(6)
        if fmt is None:
            return _datasource_format(value)
        if fmt not in _FORMATS:
            raise ValueError(f"variable format {fmt!r} is not mirrored here")
        return _FORMATS[fmt](value)

    return _VARIABLE.sub(replace, sql)


# -- step 3: backend macros ----------------------------------------------------------------------------


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _date(moment: datetime) -> str:
    return f"toDate('{moment.astimezone(UTC):%Y-%m-%d}')"


def _one_arg(name: str, args: list[str]) -> str:
    if len(args) != 1:
        raise ValueError(f"$__{name} expects 1 argument, received {len(args)}")
    return args[0]


def _macros(context: QueryContext) -> dict[str, Callable[[list[str]], str]]:
    start, end = context.start, context.end
    interval_s = max(int(context.interval.total_seconds()), 1)
    interval_ms = max(int(context.interval.total_seconds() * 1000), 1)
    dt_from, dt_to = f"toDateTime({_seconds(start)})", f"toDateTime({_seconds(end)})"
    ms_from = f"fromUnixTimestamp64Milli({_millis(start)})"
    ms_to = f"fromUnixTimestamp64Milli({_millis(end)})"

    def time_filter(args: list[str]) -> str:
        column = _one_arg("timeFilter", args)
        return f"{column} >= {dt_from} AND {column} <= {dt_to}"

    def time_filter_ms(args: list[str]) -> str:
        column = _one_arg("timeFilter_ms", args)
        return f"{column} >= {ms_from} AND {column} <= {ms_to}"

    def date_filter(args: list[str]) -> str:
        column = _one_arg("dateFilter", args)
        return f"{column} >= {_date(start)} AND {column} <= {_date(end)}"

    def time_interval(args: list[str]) -> str:
        return (
            f"toStartOfInterval(toDateTime({_one_arg('timeInterval', args)}), INTERVAL {interval_s} second)"
        )

    def time_interval_ms(args: list[str]) -> str:
        column = _one_arg("timeInterval_ms", args)
        return f"toStartOfInterval(toDateTime64({column}, 3), INTERVAL {interval_ms} millisecond)"

    return {
        "fromTime": lambda _: dt_from,
        "toTime": lambda _: dt_to,
        "fromTime_ms": lambda _: ms_from,
        "toTime_ms": lambda _: ms_to,
        "timeFilter": time_filter,
        "timeFilter_ms": time_filter_ms,
        "dateFilter": date_filter,
        "timeInterval": time_interval,
        "timeInterval_ms": time_interval_ms,
        "interval_s": lambda _: str(interval_s),
    }


_MACRO: Final = re.compile(r"\$__(\w+)\b")


def _backend_macros(sql: str, context: QueryContext) -> str:
    macros = _macros(context)
    out: list[str] = []
    position = 0
    for match in _MACRO.finditer(sql):
        if match.start() < position:
            continue
        name = match.group(1)
        if name not in macros:
            raise ValueError(f"$__{name} is not a macro of the ClickHouse plugin")
        args: list[str] = []
        end = match.end()
        if end < len(sql) and sql[end] == "(":
            args, end = _macro_args(sql, end)
            args = [arg.strip() for arg in args]
        out.append(sql[position : match.start()])
        out.append(macros[name](args))
        position = end
    out.append(sql[position:])
    return "".join(out)
