"""``llmledger budget``: set, list, remove and check spend limits per tenant (or per user)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation

from llmledger.exporter._internal.budgets import (
    PERIODS,
    budget_status,
    parse_limit,
    remove_budget,
    set_budget,
)
from llmledger.exporter._internal.store import open_store
from llmledger.exporter.cli._common import add_store_options, store_config
from llmledger.exporter.cli._sql import write_result

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    parser = subparsers.add_parser(
        "budget",
        help="spend limits per tenant or user: set, list, remove, check",
        description="Budgets are limits in USD per tenant (or per user of a tenant) per day or month (UTC). "
        "`check` prints breaches and near-breaches and exits 1 when any budget is breached, for cron and CI. "
        "Hard budgets can be enforced in the app with llmledger.exporter.BudgetGuard.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    set_ = actions.add_parser(
        "set", help="create or change a budget", description="Create or change a budget."
    )
    set_.add_argument("tenant", help="the tenant id (tenant.id)")
    set_.add_argument("limit", help="the limit in USD, e.g. 250 or 19.99")
    set_.add_argument("--user", default="", help="limit one user of the tenant instead of the whole tenant")
    set_.add_argument(
        "--period", choices=PERIODS, default="monthly", help="daily or monthly (default monthly)"
    )
    set_.add_argument(
        "--hard",
        action="store_true",
        help="enforceable: BudgetGuard refuses the tenant's calls once it is breached",
    )
    add_store_options(set_)
    set_.set_defaults(handler=_set)

    list_ = actions.add_parser(
        "list", help="budgets with this period's spend", description="Every budget with its spend so far."
    )
    list_.add_argument("--format", choices=("table", "csv", "json"), default="table")
    add_store_options(list_)
    list_.set_defaults(handler=_list)

    remove = actions.add_parser("remove", help="delete a budget", description="Delete one budget.")
    remove.add_argument("tenant")
    remove.add_argument("--user", default="")
    remove.add_argument("--period", choices=PERIODS, default="monthly")
    add_store_options(remove)
    remove.set_defaults(handler=_remove)

    check = actions.add_parser(
        "check",
        help="print breaches and near-breaches; exit 1 if any budget is breached",
        description="Exit codes: 0 nothing breached (near-breaches are printed), 1 a budget is breached, "
        "2 bad arguments or the store is unreachable.",
    )
    check.add_argument("--warn-at", default="0.8", help="share of a budget that counts as near (default 0.8)")
    add_store_options(check)
    check.set_defaults(handler=_check)


def _set(args: argparse.Namespace) -> int:
    try:
        limit = parse_limit(args.limit)
    except ValueError as exc:
        print(f"llmledger budget set: {exc}", file=sys.stderr)
        return 2
    config = store_config(args)
    client = open_store(config, write=True)
    try:
        set_budget(
            client,
            config.database,
            tenant=args.tenant,
            user=args.user,
            period=args.period,
            limit=limit,
            enforcement="hard" if args.hard else "soft",
        )
    finally:
        client.close()
    who = args.tenant + (f" / {args.user}" if args.user else "")
    print(f"budget set: {who} {args.period} ${limit:f} ({'hard' if args.hard else 'soft'})")
    return 0


def _rows(args: argparse.Namespace) -> list[tuple[object, ...]]:
    config = store_config(args)
    client = open_store(config)
    try:
        statuses = budget_status(client, config.database)
    finally:
        client.close()
    warn_at = Decimal(getattr(args, "warn_at", "0.8"))
    return [
        (s.tenant_id, s.user_id or "*", s.period, s.enforcement, f"{s.limit_usd.normalize():f}",
         f"{s.spent_usd:f}", f"{s.share * 100:.1f}%", s.state(warn_at))
        for s in statuses
    ]  # fmt: skip


_COLUMNS = ["tenant", "user", "period", "enforcement", "limit_usd", "spent_usd", "used", "state"]


def _list(args: argparse.Namespace) -> int:
    write_result(_COLUMNS, _rows(args), args.format, sys.stdout)
    return 0


def _remove(args: argparse.Namespace) -> int:
    config = store_config(args)
    client = open_store(config, write=True)
    try:
        removed = remove_budget(
            client, config.database, tenant=args.tenant, user=args.user, period=args.period
        )
    finally:
        client.close()
    who = args.tenant + (f" / {args.user}" if args.user else "")
    if not removed:
        print(f"llmledger budget remove: no {args.period} budget for {who}", file=sys.stderr)
        return 1
    print(f"budget removed: {who} {args.period}")
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        warn_at = Decimal(args.warn_at)
        if not Decimal(0) < warn_at <= Decimal(1):
            raise InvalidOperation
    except InvalidOperation:
        print(
            f"llmledger budget check: --warn-at must be a share between 0 and 1, got {args.warn_at!r}",
            file=sys.stderr,
        )
        return 2
    rows = _rows(args)
    flagged = [r for r in rows if r[-1] != "ok"]
    if flagged:
        write_result(_COLUMNS, flagged, "table", sys.stdout)
    breached = sum(1 for r in rows if r[-1] == "BREACHED")
    near = sum(1 for r in rows if r[-1] == "near")
    print(f"{len(rows)} budgets: {breached} breached, {near} near (>= {warn_at * 100:.0f}%)")
    return 1 if breached else 0
