"""Benchmark llmledger's instrumentation overhead against the uninstrumented SDK and the alternatives.

Usage (normally through ``python3 scripts/dev.py bench [args]``)::

    python bench/run.py                  # full run, 2-3 minutes, rewrites docs/benchmarks.md
    python bench/run.py --quick          # smoke run, prints the table, leaves docs alone
    python bench/run.py --modes none llmledger --only chat

Each (environment, mode) pair runs in its own processes (``bench/bench_overhead.py``; three
by default, hash seeds 0-2, the same seeds for every mode, samples pooled):

- the project's ``.venv``: ``none`` and ``llmledger``;
- the comparison ``.venv-bench`` (created or updated on demand from
  ``bench/requirements-compare.txt``): ``none``, ``openllmetry`` and ``contrib``, and
  ``llmledger`` too with ``--llmledger-in-compare-env``.

``none`` runs in both so each instrumentation is compared with the bare SDK of its own
environment. The processes run side by side and take turns, one timed repetition each
(``bench/overhead_workers.py``), so a burst of load from elsewhere on this shared machine
falls on all modes alike instead of landing on one. The markdown table is printed
and, for a full run, written under ``## Instrumentation overhead`` in ``docs/benchmarks.md``.
Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from compare_env import ensure_compare_env
from overhead_report import (
    SCENARIO_LABELS,
    Run,
    render_section,
    render_summary,
    render_table,
    replace_section,
)
from overhead_workers import Settings, measure_interleaved

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = BENCH / ".results"
PROJECT_PYTHON = Path(os.environ.get("LLMLEDGER_VENV", ROOT / ".venv")) / "bin" / "python"
ENV_DESCRIPTIONS = {
    "project": "the project's `.venv` (llmledger installed editable)",
    "compare": "`.venv-bench`, from `bench/requirements-compare.txt` (OpenLLMetry, contrib)",
}
DEFAULT_MODES = ("none", "llmledger", "openllmetry", "contrib")
# Not run by default: what llmledger costs when the sampler drops the span, and without the
# stream usage request (tokens of usage-less streams estimated, as contrib asks for none).
MODES = (*DEFAULT_MODES, "llmledger-unsampled", "llmledger-estimate")
SCENARIOS = tuple(SCENARIO_LABELS)
# Comparison instrumentations must not touch the project's environment, and llmledger is
# measured where users will run it; --llmledger-in-compare-env adds it to the other side too.
_JOB_ENVS = {
    "none": ("project", "compare"),
    "llmledger": ("project",),
    "openllmetry": ("compare",),
    "contrib": ("compare",),
    "llmledger-unsampled": ("project",),
    "llmledger-estimate": ("project",),
}


@dataclass(frozen=True)
class Job:
    env: str
    mode: str


def _jobs(modes: Sequence[str], llmledger_everywhere: bool) -> list[Job]:
    jobs: list[Job] = []
    # Overheads are only defined against a baseline, so "none" always runs.
    for mode in dict.fromkeys(("none", *modes)):
        envs = ("project", "compare") if mode == "llmledger" and llmledger_everywhere else _JOB_ENVS[mode]
        jobs += [Job(env, mode) for env in envs]
    if "none" not in modes:
        measured = {job.env for job in jobs if job.mode != "none"}
        jobs = [job for job in jobs if job.mode != "none" or job.env in measured]
    # Baselines first within an environment keeps the table's reading order.
    return sorted(jobs, key=lambda job: (job.env != "project", job.env, MODES.index(job.mode)))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "instrumentation"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    # The llmledger rows measure the working tree, which may be ahead of the commit.
    return f"{revision} (instrumentation/ has uncommitted changes)" if dirty else revision


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES), help="default: %(default)s"
    )
    parser.add_argument(
        "--unsampled", action="store_true", help="add llmledger-unsampled (ALWAYS_OFF sampler) to the modes"
    )
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="add llmledger-estimate (LLMLEDGER_STREAM_USAGE=false) to the modes",
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=[], help="scenarios (default all)")
    parser.add_argument(
        "--reps", type=int, default=16, help="timed repetitions per scenario and mode (default 16)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=3,
        help="worker processes per mode, each with its own hash seed, samples pooled (default 3)",
    )
    parser.add_argument(
        "--rep-seconds", type=float, default=0.15, help="CPU seconds per repetition (default 0.15)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.4, help="warm-up seconds per scenario and mode (default 0.4)"
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="time the table reports: process CPU time (default; robust to other load) or wall",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after timing, write a cProfile of one repetition per scenario and mode (read with pstats)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few short repetitions, docs untouched"
    )
    parser.add_argument(
        "--llmledger-in-compare-env", action="store_true", help="also measure llmledger in .venv-bench"
    )
    parser.add_argument(
        "--write-docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"write the table into {DOCS.relative_to(ROOT)} (default: yes, unless --quick/--only/--modes)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.rep_seconds, args.warmup, args.processes = 5, 0.05, 0.1, 1
    if args.write_docs is None:
        # Only a complete run may replace the published table.
        args.write_docs = not args.quick and not args.only and set(DEFAULT_MODES) <= set(args.modes)
    if args.unsampled and "llmledger-unsampled" not in args.modes:
        args.modes.append("llmledger-unsampled")
    if args.estimate and "llmledger-estimate" not in args.modes:
        args.modes.append("llmledger-estimate")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = _jobs(args.modes, args.llmledger_in_compare_env)
    pythons = {"project": PROJECT_PYTHON}
    if any(job.env == "compare" for job in jobs):
        try:
            pythons["compare"] = ensure_compare_env()
        except (OSError, subprocess.CalledProcessError) as exc:
            # Still measure what the project's environment can; the table says what is missing.
            print(f"comparison environment unavailable: {exc}", file=sys.stderr)
    runs = [Run(env=job.env, mode=job.mode, clock=args.clock) for job in jobs]
    scenarios = [s for s in SCENARIOS if not args.only or s in args.only]
    started = datetime.datetime.now(datetime.UTC)
    load_before = _load()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix=started.strftime("overhead-%Y%m%dT%H%M%S-"), dir=RESULTS))
    settings = Settings(
        scenarios=scenarios,
        reps=args.reps,
        rep_s=args.rep_seconds,
        warmup_s=args.warmup,
        profile_dir=out_dir if args.profile else None,
        processes=args.processes,
    )
    print(
        f"{len(jobs) * args.processes} worker processes, {len(scenarios)} scenarios; logs and raw results in {out_dir}",
        file=sys.stderr,
    )
    measure_interleaved(pythons, runs, settings, out_dir)
    elapsed = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    (out_dir / "runs.json").write_text(json.dumps([asdict(run) for run in runs], indent=1))

    print(render_table(runs, scenarios))
    print()
    print(render_summary(runs, scenarios))
    if args.profile:
        print(f"\nprofiles: {out_dir}/*.prof (python -m pstats FILE)", file=sys.stderr)
    if not args.write_docs:
        return 0
    machine = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{_cpu_model()}, {os.cpu_count()} logical cores (shared with other work: expect noise)",
        "OS": platform.platform(),
        "load average (1/5/15 min) before / after": f"{load_before} / {_load()}",
        "commit": _git_revision(),
        "run time": f"{elapsed:.0f} s",
    }
    described = (
        f"per scenario and mode, {args.warmup:g} s warm-up, then {args.reps} timed repetitions of "
        f"~{args.rep_seconds:g} s CPU each, spread over {args.processes} processes (hash seeds "
        f"0-{args.processes - 1}) and taken in turns with the other modes"
    )
    section = render_section(runs, scenarios, machine, described, ENV_DESCRIPTIONS)
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    document = DOCS.read_text() if DOCS.exists() else ""
    DOCS.write_text(replace_section(document, section))
    print(f"\nwrote {DOCS.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
