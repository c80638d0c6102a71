"""``llmledger tenant-user create``: a read-only ClickHouse user that sees one tenant's rows."""

from __future__ import annotations

import argparse
import secrets

from llmledger.exporter._internal.config import tenant_user_password
from llmledger.exporter._internal.store import StoreError, open_store, run_command
from llmledger.exporter._internal.tenant_access import TENANT_TABLES, tenant_access_statements
from llmledger.exporter.cli._common import add_store_options, store_config

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    tenant_user = subparsers.add_parser(
        "tenant-user",
        help="manage read-only ClickHouse users limited to one tenant",
        description="Per-tenant access for Grafana organisations on a shared ClickHouse server.",
    )
    actions = tenant_user.add_subparsers(title="actions", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create or update a read-only user that sees one tenant's rows",
        description="Create (or update) a ClickHouse user with readonly = 2 and row policies on "
        f"{', '.join(TENANT_TABLES)} so it sees only one tenant's rows. Needs a server "
        "(the embedded store has no users) and an admin connection with access management.",
    )
    create.add_argument("--tenant", required=True, help="the tenant.id whose rows the user may read")
    create.add_argument("--user", required=True, help="ClickHouse user name to create")
    create.add_argument(
        "--password",
        help="password (default: LLMLEDGER_TENANT_USER_PASSWORD, else a generated one, printed once)",
    )
    create.add_argument("--cluster", help="emit ON CLUSTER <name>")
    create.add_argument("--dry-run", action="store_true", help="print the SQL instead of running it")
    add_store_options(create)
    create.set_defaults(handler=_create)


def _create(args: argparse.Namespace) -> int:
    config = store_config(args)
    given = tenant_user_password(args.password)
    generated = given is None
    password = given or secrets.token_urlsafe(18)
    if args.dry_run:
        # Printed with a placeholder: the password never reaches the terminal or a log.
        for statement in tenant_access_statements(
            config.database, args.tenant, args.user, "<password>", args.cluster
        ):
            print(statement + ";")
        return 0
    statements = tenant_access_statements(config.database, args.tenant, args.user, password, args.cluster)
    if config.embedded:
        raise StoreError(
            "tenant users need a ClickHouse server: the embedded store has no users or row policies"
        )
    client = open_store(config, use_database=False, write=True)
    try:
        for statement in statements:
            run_command(client, statement)
    finally:
        client.close()
    print(f"user {args.user} can now read tenant {args.tenant!r} in {config.database}")
    if generated:
        print(f"password (shown once): {password}")
    return 0
