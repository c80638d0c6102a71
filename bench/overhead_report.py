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
STREAM_CHUNKS = 200
"""Chunks per streamed answer: the divisor for the per-chunk columns."""


@dataclass
class Run:
    """Every process of one (environment, mode) pair, merged across rounds."""

    env: str
    mode: str
    status: str = "ok"
    reason: str = ""
    python: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=list)
    samples_ns: dict[str, list[float]] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per scenario: spans_per_call, chunks_seen, chunks_expected, error (first round's)."""

    @property
    def label(self) -> str:
        return f"{self.mode} ({self.env})"

    def add(self, result: dict[str, Any]) -> None:
        """Merge one process's JSON result into this run."""
        if result["status"] != "ok":
            self.status, self.reason = result["status"], result["reason"]
            return
        self.python = result["python"]
        self.packages = result["packages"]
        self.metric_names = result["metric_names"]
        for scenario in result["scenarios"]:
            name = scenario["scenario"]
            self.samples_ns.setdefault(name, []).extend(scenario["samples_ns"])
            self.checks.setdefault(name, scenario)

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
    notes: list[str] = []
    if check.get("error"):
        notes.append(f"call failed: {check['error']}")
    if run.mode != "none" and check["spans_per_call"] != 1:
        notes.append(f"{check['spans_per_call']:g} spans per call")
    if check["chunks_seen"] != check["chunks_expected"]:
        notes.append(f"app saw {check['chunks_seen']} chunks, expected {check['chunks_expected']}")
    return notes


def _fmt(value: float | None, digits: int = 0, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def render_table(runs: Sequence[Run], scenarios: Sequence[str]) -> str:
    """One row per scenario and mode; overhead against ``none`` of the same environment."""
    baselines = {run.env: run for run in runs if run.mode == "none"}
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
            base = baselines.get(run.env)
            base_us = base.median_us(scenario) if base is not None and base is not run else None
            overhead = us - base_us if us is not None and base_us is not None else None
            ratio = f"{us / base_us:.2f}x" if us is not None and base_us else "-"
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
    return " ".join(text.split())[:400]


def render_versions(runs: Sequence[Run]) -> str:
    by_env: dict[str, Run] = {}
    for run in runs:
        if run.status == "ok":
            by_env.setdefault(run.env, run)
    lines: list[str] = []
    for env, run in by_env.items():
        packages = ", ".join(f"{name} {version}" for name, version in sorted(run.packages.items()))
        lines.append(f"- {env}: Python {run.python}; {packages}")
    return "\n".join(lines)


def render_section(
    runs: Sequence[Run],
    scenarios: Sequence[str],
    machine: dict[str, str],
    settings: str,
    envs: dict[str, str],
) -> str:
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in machine.items())
    env_lines = "\n".join(f"- `{name}`: {description}" for name, description in envs.items())
    unavailable = render_unavailable(runs)
    parts = [
        SECTION_HEADING,
        "",
        "Generated by `python3 scripts/dev.py bench` (`bench/run.py`); do not edit by hand.",
        "",
        "What one openai SDK call costs with each instrumentation, over an in-process",
        "`httpx2.MockTransport` that returns API-shaped bodies (`bench/fake_openai_api.py`), so",
        "no network time hides the instrumentation's. Each mode runs in its own process.",
        "Every mode, `none` included, has a real OpenTelemetry SDK `TracerProvider` with a",
        "`SimpleSpanProcessor` into an exporter that only counts spans, and a `MeterProvider`",
        "with an `InMemoryMetricReader`: spans are built and ended exactly as in production, but",
        "export costs nothing and takes no background thread, so the numbers are instrumentation",
        "cost, not export cost.",
        "",
        "- µs/call: median over all timed repetitions (± half the interquartile range); each",
        "  repetition is a batch of calls timed with `perf_counter_ns`, garbage collection off.",
        "- overhead: mode - `none` measured in the *same* environment, in µs and as a ratio.",
        f"- µs/chunk: a streamed call's time divided by its {STREAM_CHUNKS} chunks, so the per-call",
        "  costs are spread over the chunks too.",
        "- notes flag a mode that did not emit exactly one span per call, or that changed what",
        "  the app iterates.",
        "- Defaults as a user gets them: OpenLLMetry records prompt and completion content unless",
        "  `TRACELOOP_TRACE_CONTENT=false`; contrib and llmledger record none by default.",
        "",
        "Goal (issue 2): llmledger adds at most 45 µs to a non-streaming chat call and at most",
        "1 µs per stream chunk.",
        "",
        render_table(runs, scenarios),
        "",
    ]
    if unavailable:
        parts += ["Not measured:", "", unavailable, ""]
    parts += [
        "Environments:",
        "",
        env_lines,
        "",
        render_versions(runs),
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
