"""Turn the per-process results of the overhead benchmark into the markdown table.

Pure functions over the JSON that ``bench_overhead.py`` writes (standard library only):
``render_section`` builds the ``## Instrumentation overhead`` section and
``replace_section`` splices it into ``docs/benchmarks.md`` leaving other sections intact.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SECTION_HEADING = "## Instrumentation overhead"
SCENARIO_LABELS = {
    "chat": "chat, non-streaming",
    "chat_stream_usage": "chat stream, 200 chunks, include_usage",
    "chat_stream": "chat stream, 200 chunks, no usage",
    "embeddings": "embeddings (1 input, 1536 dims)",
    "async_chat": "async chat, non-streaming",
}
SHORT_LABELS = {
    "chat": "chat",
    "chat_stream_usage": "stream with usage, per chunk",
    "chat_stream": "stream without usage, per chunk",
    "embeddings": "embeddings",
    "async_chat": "async chat",
}
STREAM_CHUNKS = 200
"""Chunks per streamed answer: the divisor for the per-chunk columns."""


@dataclass
class Run:
    """What one worker process (one environment and mode) reported."""

    env: str
    mode: str
    clock: str = "cpu"
    """Which of the worker's clocks the table uses: ``cpu`` or ``wall``."""
    status: str = "ok"
    """``ok``, ``unavailable`` (could not import or instrument) or ``error``."""
    reason: str = ""
    python: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per scenario, the worker's answer to ``prepare``: spans per call, chunks seen, error."""
    samples_ns: dict[str, list[float]] = field(default_factory=dict)
    """Per scenario, nanoseconds per call on ``clock``, one per repetition."""
    wall_over_cpu: list[float] = field(default_factory=list)
    """Per repetition, wall-clock time over CPU time: how much the process had to wait."""

    @property
    def label(self) -> str:
        return f"{self.mode} ({self.env})"

    def start(self, hello: dict[str, Any]) -> None:
        self.status, self.reason = hello["status"], hello["reason"]
        self.python, self.packages = hello["python"], hello["packages"]

    def fail(self, reason: str) -> None:
        self.status, self.reason = "error", reason

    def add_sample(self, scenario: str, sample: dict[str, Any]) -> None:
        if "error" in sample:
            self.checks.setdefault(scenario, {})["error"] = sample["error"]
            return
        self.samples_ns.setdefault(scenario, []).append(sample[f"{self.clock}_ns"])
        if sample["cpu_ns"]:
            self.wall_over_cpu.append(sample["wall_ns"] / sample["cpu_ns"])

    def usable(self, scenario: str) -> bool:
        return self.status == "ok" and "error" not in self.checks.get(scenario, {"error": "not prepared"})

    def median_us(self, scenario: str) -> float | None:
        samples = self.samples_ns.get(scenario)
        return statistics.median(samples) / 1000 if samples else None

    def half_iqr_us(self, scenario: str) -> float:
        samples = self.samples_ns.get(scenario, [])
        if len(samples) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(samples, n=4)
        return (q3 - q1) / 2000


def _problems(run: Run, scenario: str) -> list[str]:
    check = run.checks.get(scenario)
    if check is None:
        return []
    if "error" in check:
        return [f"call failed: {_one_line(check['error'])}"]
    notes: list[str] = []
    expected_spans = 0 if run.mode == "none" or run.mode.endswith("-unsampled") else 1
    if check["spans_per_call"] != expected_spans:
        notes.append(f"{check['spans_per_call']:g} spans per call")
    if check["chunks_seen"] != check["chunks_expected"]:
        notes.append(f"app saw {check['chunks_seen']} chunks, expected {check['chunks_expected']}")
    return notes


def _fmt(value: float | None, digits: int = 0, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _overhead_us(run: Run, runs: Sequence[Run], scenario: str) -> float | None:
    """``run``'s median minus that of ``none`` in the same environment."""
    base = next((other for other in runs if other.mode == "none" and other.env == run.env), None)
    if base is None or base is run:
        return None
    mine, bare = run.median_us(scenario), base.median_us(scenario)
    return mine - bare if mine is not None and bare is not None else None


def render_summary(runs: Sequence[Run], scenarios: Sequence[str]) -> str:
    """Overhead only, one row per instrumented mode: per call, or per chunk for streams."""
    header = " | ".join(SHORT_LABELS.get(scenario, scenario) for scenario in scenarios)
    lines = [f"| overhead vs none, µs | {header} |", "|---|" + "--:|" * len(scenarios)]
    for run in runs:
        if run.mode == "none":
            continue
        cells: list[str] = []
        for scenario in scenarios:
            overhead = _overhead_us(run, runs, scenario)
            if run.status != "ok":
                cells.append(run.status)
            elif overhead is None:
                cells.append("-")
            elif "stream" in scenario:
                cells.append(f"{overhead / STREAM_CHUNKS:+.2f}")
            else:
                cells.append(f"{overhead:+.0f}")
        lines.append(f"| {run.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_table(runs: Sequence[Run], scenarios: Sequence[str]) -> str:
    """One row per scenario and mode; overhead against ``none`` of the same environment."""
    lines = [
        "| scenario | mode (env) | µs/call | overhead µs | ratio | µs/chunk | overhead µs/chunk | notes |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for scenario in scenarios:
        label = SCENARIO_LABELS.get(scenario, scenario)
        streamed = "stream" in scenario
        for run in runs:
            if run.status != "ok":
                lines.append(f"| {label} | {run.label} | {run.status} | - | - | - | - | see below |")
                continue
            us = run.median_us(scenario)
            overhead = _overhead_us(run, runs, scenario)
            ratio = f"{us / (us - overhead):.2f}x" if us is not None and overhead is not None else "-"
            spread = f" ±{run.half_iqr_us(scenario):.0f}" if us is not None else ""
            per_chunk = us / STREAM_CHUNKS if streamed and us is not None else None
            overhead_chunk = overhead / STREAM_CHUNKS if streamed and overhead is not None else None
            lines.append(
                f"| {label} | {run.label} | {_fmt(us)}{spread} | {_fmt(overhead, sign=True)} | {ratio} "
                f"| {_fmt(per_chunk, 1)} | {_fmt(overhead_chunk, 2, sign=True)} "
                f"| {'; '.join(_problems(run, scenario))} |"
            )
    return "\n".join(lines)


def render_unavailable(runs: Sequence[Run]) -> str:
    lines = [f"- **{run.label}** {run.status}: {_one_line(run.reason)}" for run in runs if run.status != "ok"]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    """A reason or error fit for one markdown table cell or list item."""
    return " ".join(text.split())[:400].replace("|", "\\|")


def render_recorded(runs: Sequence[Run]) -> str:
    """What each instrumentation records for its cost: the chat span's size and the metrics."""
    lines: list[str] = []
    for run in runs:
        check = run.checks.get("chat", {})
        if run.mode == "none" or run.status != "ok" or "span_attributes" not in check:
            continue
        metrics = ", ".join(f"`{name}`" for name in run.metric_names) or "none"
        lines.append(
            f"- {run.label}: {check['span_attributes']} attributes and {check['span_events']} events "
            f"on the chat span; metrics {metrics}"
        )
    return "\n".join(lines)


def render_environments(runs: Sequence[Run], envs: dict[str, str]) -> str:
    by_env: dict[str, Run] = {}
    for run in runs:
        if run.status == "ok":
            by_env.setdefault(run.env, run)
    lines: list[str] = []
    for env, description in envs.items():
        run = by_env.get(env)
        if run is None:
            continue
        packages = ", ".join(f"{name} {version}" for name, version in sorted(run.packages.items()))
        lines.append(f"- `{env}`: {description}. Python {run.python}; {packages}")
    return "\n".join(lines)


def render_goal(runs: Sequence[Run]) -> str:
    """llmledger's numbers next to issue 2's targets, or why there are none."""
    target = "≤ 45 µs per non-streaming chat call, ≤ 1 µs per stream chunk"
    ours = next((run for run in runs if run.mode == "llmledger" and run.env == "project"), None)
    base = next((run for run in runs if run.mode == "none" and run.env == "project"), None)
    if ours is None or base is None or ours.status != "ok":
        return f"Goal (issue 2): llmledger adds {target}; not measured in this run."
    found: list[str] = []
    for scenario, divisor, unit in (
        ("chat", 1, "per chat call"),
        ("chat_stream_usage", STREAM_CHUNKS, "per chunk with usage"),
        ("chat_stream", STREAM_CHUNKS, "per chunk without"),
    ):
        mine, bare = ours.median_us(scenario), base.median_us(scenario)
        if mine is not None and bare is not None:
            found.append(f"{(mine - bare) / divisor:+.{0 if divisor == 1 else 2}f} µs {unit}")
    return f"Goal (issue 2): llmledger adds {target}. Measured here: {', '.join(found) or 'nothing'}."


def _clock_text(runs: Sequence[Run]) -> str:
    if runs and runs[0].clock == "wall":
        return (
            "- µs/call: median over the timed repetitions (± half the interquartile range); each\n"
            "  repetition is a batch of calls timed together in wall-clock time\n"
            "  (`perf_counter_ns`) with garbage collection off."
        )
    return (
        "- µs/call: median over the timed repetitions (± half the interquartile range); each\n"
        "  repetition is a batch of calls timed together, garbage collection off, in the\n"
        "  process's CPU time (`process_time_ns`). The transport does no I/O, so on an idle\n"
        "  machine CPU time is wall time; on this shared one it leaves out the time other work\n"
        "  holds the core (wall-clock samples are kept in the raw results, `--clock wall`)."
    )


def _contention(runs: Sequence[Run]) -> str:
    ratios = [ratio for run in runs for ratio in run.wall_over_cpu]
    if not ratios:
        return "unknown"
    return (
        f"wall time / CPU time per repetition: median {statistics.median(ratios):.2f}, "
        f"max {max(ratios):.2f} (1.00 = the benchmark had a core to itself)"
    )


def render_section(
    runs: Sequence[Run],
    scenarios: Sequence[str],
    machine: dict[str, str],
    settings: str,
    envs: dict[str, str],
) -> str:
    machine = {**machine, "contention": _contention(runs)}
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in machine.items())
    unavailable = render_unavailable(runs)
    parts = [
        SECTION_HEADING,
        "",
        "Generated by `python3 scripts/dev.py bench` (`bench/run.py`); do not edit by hand.",
        "",
        "What one openai SDK call costs with each instrumentation, over an in-process",
        "`httpx2.MockTransport` that returns API-shaped bodies (`bench/fake_openai_api.py`), so",
        "no network time hides the instrumentation's. Each mode runs in its own processes (three",
        "by default, with hash seeds 0-2, the same for every mode, their samples pooled): one",
        "process's memory layout makes it a few per cent faster or slower for its whole life,",
        "which on a 17 ms stream is more than an instrumentation costs. The processes take",
        "turns, one timed repetition each, so load from other work on the machine falls on",
        "every mode alike.",
        "",
        "Every mode, `none` included, has a real OpenTelemetry SDK `TracerProvider` with a",
        "`SimpleSpanProcessor` into an exporter that only counts spans, and a `MeterProvider`",
        "with an `InMemoryMetricReader`: spans are built and ended exactly as in production, but",
        "export costs nothing and takes no background thread, so the numbers are instrumentation",
        "cost, not export cost.",
        "",
        _clock_text(runs),
        "- overhead: mode - `none` measured in the *same* environment, in µs and as a ratio.",
        f"- µs/chunk: a streamed call's time divided by its {STREAM_CHUNKS} chunks, so the per-call",
        "  costs are spread over the chunks too.",
        "- notes flag a mode that did not emit exactly one span per call, or that changed what",
        "  the app iterates.",
        "- Defaults as a user gets them: OpenLLMetry records prompt and completion content unless",
        "  `TRACELOOP_TRACE_CONTENT=false`; contrib and llmledger record none by default.",
        "",
        render_goal(runs),
        "",
        render_summary(runs, scenarios),
        "",
        "In full:",
        "",
        render_table(runs, scenarios),
        "",
    ]
    if unavailable:
        parts += ["Not measured:", "", unavailable, ""]
    recorded = render_recorded(runs)
    if recorded:
        parts += ["What each mode recorded:", "", recorded, ""]
    parts += [
        "Environments:",
        "",
        render_environments(runs, envs),
        "",
        "Machine and run:",
        "",
        machine_lines,
        f"- settings: {settings}",
        "",
    ]
    return "\n".join(parts)


def replace_section(document: str, section: str) -> str:
    """``document`` with its overhead section replaced by ``section`` (appended if absent)."""
    pattern = re.compile(rf"^{re.escape(SECTION_HEADING)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    section = section.rstrip("\n") + "\n"
    if pattern.search(document):
        return pattern.sub(lambda _: section + "\n", document, count=1).rstrip("\n") + "\n"
    if not document.strip():
        return "# Benchmarks\n\n" + section
    return document.rstrip("\n") + "\n\n" + section
