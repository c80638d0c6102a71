"""Draw each dashboard from its panels' own SQL over a demo-like month, for docs/dashboards.md.

    .venv/bin/python grafana/render_previews.py          # writes docs/images/dashboard-*.png

A dev tool (needs matplotlib, which nothing else in llmledger does). It seeds a fresh
embedded store with the test suite's demo-like month (tests/grafana/seed.py: three
tenants, four models, fallbacks, a budget breach, an error burst), written through the
product's span writer, expands every panel's SQL exactly as the ClickHouse plugin does
(grafana/panel_sql.py) and draws the result in the panel's place on the dashboard grid:
numbers for stats, lines for time series, the first rows for tables, a pie for pie
charts and a waterfall for the trace view. These are sketches of what Grafana shows, from
the real query results, not screenshots.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from grafana.panel_sql import ALL, QueryContext, expand  # noqa: E402
from llmledger.exporter import StoreConfig  # noqa: E402
from llmledger.exporter._internal.migrations import apply_migrations  # noqa: E402
from llmledger.exporter._internal.store import open_store, run_query  # noqa: E402
from tests.grafana.seed import RANGE_END, RANGE_START, seed  # noqa: E402

OUT = ROOT / "docs" / "images"
ROW_HEIGHT_IN = 0.42  # one grid row
WIDTH_IN = 13.0
DPI = 64
BACKGROUND = "#181b1f"
PANEL = "#22252b"
TEXT = "#d8d9da"
MUTED = "#8e8e8e"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff", "#96d98d"]


def _fmt(value: object, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return f"{value:%m-%d %H:%M}"
    if isinstance(value, Decimal | float):
        number = float(value)
        if "share" in column or "rate" in column or column in ("change", "used"):
            return f"{number:.1%}"
        if any(k in column for k in ("spend", "usd", "cost", "month", "saved", "projected", "mtok")):
            return f"${number:,.2f}" if abs(number) >= 0.01 or number == 0 else f"${number:.6f}"
        return f"{number:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    text = str(value)
    return text if len(text) <= 22 else text[:10] + "…" + text[-8:]


def _stat(ax: Axes, rows: list[dict[str, Any]]) -> None:
    if not rows:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", fontsize=11)
        return
    row = (
        rows[0]
        if len(rows) == 1
        else {k: sum((r[k] or 0) for r in rows) for k in rows[0] if k == "saved_usd"}
    )
    items = [(k, v) for k, v in row.items() if not k.endswith("_per_mtok") and k != "cached_tokens"]
    for i, (key, value) in enumerate(items):
        x = (i + 0.5) / len(items)
        ax.text(
            x, 0.55, _fmt(value, key), color=COLORS[0], ha="center", va="center", fontsize=15, weight="bold"
        )
        ax.text(x, 0.18, key.replace("_", " "), color=MUTED, ha="center", va="center", fontsize=8)


def _timeseries(ax: Axes, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    label_keys = [k for k in keys[1:] if isinstance(rows[0][k], str)]
    value_keys = [k for k in keys[1:] if k not in label_keys]
    series: dict[str, tuple[list[datetime], list[float]]] = {}
    for row in rows:
        for value_key in value_keys:
            name = " ".join(str(row[k]) for k in label_keys) or value_key
            if len(value_keys) > 1 and label_keys:
                name = f"{name} {value_key}"
            times, values = series.setdefault(name, ([], []))
            times.append(row[keys[0]])
            values.append(float(row[value_key] or 0))
    for i, (name, (times, values)) in enumerate(sorted(series.items())[:8]):
        ax.plot(times, values, color=COLORS[i % len(COLORS)], linewidth=1.1, label=name)  # pyright: ignore[reportArgumentType]
    ax.legend(fontsize=6, loc="upper left", frameon=False, labelcolor=TEXT, ncol=min(4, len(series)))
    ax.tick_params(colors=MUTED, labelsize=6)
    ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%m-%d"))  # pyright: ignore[reportAttributeAccessIssue]
    for spine in ax.spines.values():
        spine.set_color("#3a3d42")


def _table(ax: Axes, rows: list[dict[str, Any]], h: int) -> None:
    if not rows:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", fontsize=9)
        return
    columns = [
        c for c in rows[0] if not c.endswith("_q") and c not in ("tags", "serviceTags", "enforcement")
    ][:10]
    shown = rows[: max(1, h - 2)]
    cell_text = [[_fmt(r[c], c) for c in columns] for r in shown]
    table = ax.table(cellText=cell_text, colLabels=columns, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(6)
    for cell in table.get_celld().values():
        cell.set_edgecolor("#3a3d42")
        cell.set_facecolor(PANEL)
        cell.get_text().set_color(TEXT)
        cell.set_height(1 / (len(shown) + 1.5))


def _pie(ax: Axes, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    label, value = list(rows[0])[:2]
    values = [float(r[value] or 0) for r in rows]
    ax.pie(values, labels=[str(r[label]) for r in rows], colors=COLORS, textprops={"color": TEXT, "fontsize": 7},
           wedgeprops={"width": 0.45}, autopct="%1.0f%%", pctdistance=0.78)  # fmt: skip


def _trace(ax: Axes, rows: list[dict[str, Any]]) -> None:
    if not rows:
        ax.text(
            0.5, 0.5, "Pick a call above to see its trace", color=MUTED, ha="center", va="center", fontsize=9
        )
        return
    start = min(r["startTime"] for r in rows)
    for i, row in enumerate(rows):
        ax.barh(
            i,
            row["duration"],
            left=row["startTime"] - start,
            color=COLORS[2 if row["statusCode"] == 0 else 5],
        )
        ax.text(row["startTime"] - start, i, f" {row['operationName']}  {row['duration']:.0f} ms", color=TEXT,
                va="center", fontsize=7)  # fmt: skip
    ax.invert_yaxis()
    ax.set_yticks([])
    ax.tick_params(colors=MUTED, labelsize=6)


def draw(dashboard: dict[str, Any], results: dict[int, list[dict[str, Any]]], path: Path) -> None:
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(WIDTH_IN, rows * ROW_HEIGHT_IN + 0.5), facecolor=BACKGROUND)
    height = rows * ROW_HEIGHT_IN + 0.5
    fig.text(0.01, 1 - 0.25 / height, dashboard["title"], color=TEXT, fontsize=12, va="center")
    for panel in panels:
        g = panel["gridPos"]
        left, width = g["x"] / 24, g["w"] / 24
        top = 1 - (0.5 + g["y"] * ROW_HEIGHT_IN) / height
        panel_height = g["h"] * ROW_HEIGHT_IN / height
        frame = fig.add_axes((left + 0.003, top - panel_height + 0.004, width - 0.006, panel_height - 0.008))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color("#3a3d42")
        frame.text(0.01, 0.97, panel["title"], color=TEXT, fontsize=8, va="top", transform=frame.transAxes)
        inner = (left + 0.012, top - panel_height + 0.025, width - 0.02, panel_height - 0.06)
        ax = fig.add_axes(inner)
        ax.set_facecolor(PANEL)
        data = results[panel["id"]]
        kind = panel["type"]
        if kind == "timeseries":
            _timeseries(ax, data)
            continue
        ax.set_axis_off()
        if kind == "stat":
            _stat(ax, data)
        elif kind == "table":
            _table(ax, data, g["h"])
        elif kind == "piechart":
            _pie(ax, data)
        elif kind == "traces":
            ax.set_axis_on()
            _trace(ax, data)
    fig.savefig(path, dpi=DPI, facecolor=BACKGROUND)
    plt.close(fig)
    # A 64-colour palette keeps the committed PNGs small (Pillow comes with matplotlib).
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=64).save(path, optimize=True)


def main() -> int:
    store = Path(tempfile.mkdtemp(prefix="llmledger-previews-"))
    config = StoreConfig(url=f"chdb://{store}", database="llmledger")
    client = open_store(config, use_database=False, write=True)
    apply_migrations(client, config)
    seed(client, config.database)
    client.database = config.database
    # A trace worth a look: a request whose first model failed twice before a fallback answered.
    top_call = run_query(
        client,
        "SELECT TraceId FROM llm_calls WHERE tenant_id = 'globex' AND fallback_attempt = 2 "
        "AND Timestamp >= {s:DateTime64(3)} ORDER BY Timestamp LIMIT 1",
        parameters={"s": RANGE_START},
    ).result_rows[0][0]
    base = {"tenant": ALL, "model": ALL, "feature": ALL, "warn_share": "0.8", "trace_id": ""}
    OUT.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        variables = dict(base)
        if dashboard["uid"] == "llmledger-tenant-drilldown":
            variables.update(tenant="globex", trace_id=top_call)
        context = QueryContext(RANGE_START, RANGE_END, timedelta(hours=3), variables)
        results: dict[int, list[dict[str, Any]]] = {}
        for panel in dashboard["panels"]:
            (target,) = panel["targets"]
            result = run_query(client, expand(target["rawSql"], context))
            results[panel["id"]] = [
                dict(zip(result.column_names, row, strict=True)) for row in result.result_rows
            ]
        image = OUT / f"dashboard-{path.stem}.png"
        draw(dashboard, results, image)
        print(f"wrote {image.relative_to(ROOT)} ({image.stat().st_size // 1024} KiB)")
    client.close()
    shutil.rmtree(store, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
