"""The floor under the collector's ClickHouse HTTP interface: the thinnest Python HTTP server over chDB.

Usage (a store seeded by ``bench_dashboards.py --store DIR``; it is copied twice, ~1.4 GB each
for 10 M calls)::

    .venv/bin/python bench/bench_http_floor.py --store /tmp/dash10m [--repeat 15] [--rounds 2]

Every dashboard, variable and alert query (as ``bench_dashboards.py`` expands them) is timed
three ways, each through clickhouse-connect as the CLI and the dashboards' users run it:

- **in-process**: the chDB engine in the benchmark's own process (a copy of the store);
- **thinnest HTTP server**: a raw-socket HTTP/1.1 server in its own process that reads the
  request, runs it with one ``chdb`` call and writes the bytes back (another copy) — no
  authentication, settings, sessions, streaming or error shapes: what any HTTP front for chDB
  in Python costs at least;
- **collector**: ``llmledger collector`` owning the store, its ClickHouse HTTP interface.

The sides take turns per query, ``--rounds`` times, and each keeps the lower of its medians
of ``--repeat`` runs. The difference between the first two is the floor of the HTTP path
(clickhouse-connect's HTTP client, the loopback, a second process); the difference between
the last two is what the collector's interface itself adds.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bench_dashboards import DATABASE, Query, collector_serving, expand, queries

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.store import open_store, run_query

_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE)


def serve(store: Path) -> None:
    """The thinnest HTTP server: prints its port, then answers every request with one chDB call."""
    import chdb.state.sqlitelike as chdb_connection  # pyright: ignore[reportMissingTypeStubs]

    connection = chdb_connection.Connection(str(store))
    lock = threading.Lock()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    print(listener.getsockname()[1], flush=True)

    def answer(client: socket.socket) -> None:
        stream = client.makefile("rb")
        while line := stream.readline():
            target = line.decode().split(" ")[1]
            length = 0
            while (header := stream.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            params = dict(parse_qsl(urlsplit(target).query))
            sql = (params.get("query", "") + "\n" + stream.read(length).decode()).strip()
            found = _FORMAT.search(sql)
            fmt = found.group(1) if found else "TabSeparated"
            sql = sql[: found.start()] if found else sql
            with lock:
                if params.get("database"):
                    connection.query(f"USE {params['database']}", "TabSeparated")
                body = connection.query(sql, fmt).bytes() or b""
            client.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-ClickHouse-Format: "
                + fmt.encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )

    while True:
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=answer, args=(client,), daemon=True).start()


def _median_ms(client: object, sql: str, repeat: int) -> float:
    run_query(client, sql)  # pyright: ignore[reportArgumentType]
    times: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        run_query(client, sql)  # pyright: ignore[reportArgumentType]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="a store seeded by bench_dashboards.py")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0

    import clickhouse_connect

    work = Path(tempfile.mkdtemp(prefix="llmledger-bench-floor-"))
    thin_store, local_store = work / "thin", work / "local"
    for copy in (thin_store, local_store):  # the store's metadata links into its data: keep them links
        shutil.copytree(args.store, copy, symlinks=True, ignore=shutil.ignore_patterns("*.lock", "*.owner.*"))
    thin = subprocess.Popen(
        [sys.executable, __file__, "--store", str(args.store), "--serve", str(thin_store)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with collector_serving(args.store, work) as through_collector:
            assert thin.stdout is not None
            thin_client = clickhouse_connect.get_client(
                host="127.0.0.1", port=int(thin.stdout.readline()), database=DATABASE
            )
            local = open_store(StoreConfig(url=f"chdb://{local_store}", database=DATABASE), via_owner=False)
            sides = {"in-process": local, "thinnest HTTP server": thin_client, "collector": through_collector}
            results: list[tuple[Query, dict[str, float]]] = []
            for query in queries(local):
                sql = expand(query.sql, query.context)
                best: dict[str, float] = {}
                for _ in range(args.rounds):
                    for side, client in sides.items():
                        best[side] = min(best.get(side, float("inf")), _median_ms(client, sql, args.repeat))
                results.append((query, best))
                print(f"  {'  '.join(f'{v:7.1f}' for v in best.values())}  {query.where}", flush=True)
    finally:
        thin.kill()
        thin.wait()
        shutil.rmtree(work, ignore_errors=True)

    print(
        "\n| query | in-process ms | thinnest HTTP server ms (ratio) | collector ms (ratio) |\n|---|--:|--:|--:|"
    )
    for query, best in sorted(results, key=lambda item: -item[1]["in-process"]):
        base, floor, ours = best["in-process"], best["thinnest HTTP server"], best["collector"]
        print(
            f"| {query.where} | {base:.1f} | {floor:.1f} ({floor / base:.2f}) | {ours:.1f} ({ours / base:.2f}) |"
        )
    for label, ratios in (
        (
            "thinnest HTTP server / in-process",
            [b["thinnest HTTP server"] / b["in-process"] for _, b in results],
        ),
        ("collector / in-process", [b["collector"] / b["in-process"] for _, b in results]),
        (
            "collector / thinnest HTTP server",
            [b["collector"] / b["thinnest HTTP server"] for _, b in results],
        ),
    ):
        print(
            f"{label}: median {statistics.median(ratios):.2f}, max {max(ratios):.2f}, "
            f"{sum(ratio > 1.2 for ratio in ratios)} of {len(ratios)} above 1.20"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
