"""Drive one ``bench_overhead.py`` worker process per (environment, mode), interleaved.

All workers start together and are then asked in turn for one timed repetition each, in an
order rotated every repetition, so a burst of load from elsewhere on this shared machine
falls on every mode alike instead of on whichever process happened to be running. A worker
that dies, hangs or reports an error is recorded on its ``Run`` and dropped; the others go
on. Standard library only.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from overhead_report import Run

BENCH = Path(__file__).resolve().parent
# Variables that would change an instrumentation's defaults or the SDK's behaviour.
_SCRUBBED_ENV_PREFIXES = ("OTEL_", "TRACELOOP_", "OPENAI_", "LLMLEDGER_")
_START_TIMEOUT_S = 120.0
"""Importing openai and an instrumentation on a loaded 2-core machine can take a while."""


@dataclass(frozen=True)
class Settings:
    scenarios: Sequence[str]
    reps: int
    """Timed repetitions per scenario and mode."""
    rep_s: float
    """CPU seconds one repetition should take (its batch size is derived from the warm-up)."""
    warmup_s: float
    profile_dir: Path | None = None
    """Where to write a cProfile of one repetition per scenario and mode, if anywhere."""
    processes: int = 3
    """Worker processes per (environment, mode), each with its own hash seed; samples pooled.

    One process's memory layout (set by its hash seed and what it imported) makes it a few
    per cent faster or slower for its whole life: on a 17 ms stream that is ±0.5 ms, more than
    an instrumentation's cost. Every mode runs under the same seeds 0..processes-1, so the
    layouts vary within a mode and alike across modes."""


class WorkerDiedError(Exception):
    """The worker exited, hung, or answered something that is not a reply."""


class WorkerProcess:
    """One worker: requests go to its stdin, replies come from a reader thread."""

    def __init__(self, python: Path, mode: str, log: Path, hash_seed: int = 0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
        env["PYTHONHASHSEED"] = str(hash_seed)
        self._log_path = log
        self._log = log.open("w")
        try:
            self._process = subprocess.Popen(
                [str(python), str(BENCH / "bench_overhead.py"), mode],
                cwd=BENCH,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
            )
        except OSError:
            self._log.close()
            raise
        self._replies: queue.Queue[str | None] = queue.Queue()
        assert self._process.stdout is not None
        threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self._replies.put(line)
        self._replies.put(None)

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise WorkerDiedError(f"no reply within {timeout:.0f} s") from None
        if line is None:
            self._process.wait()
            raise WorkerDiedError(f"exited with {self._process.returncode}: {self._stderr_tail()}")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise WorkerDiedError(f"unreadable reply {line[:200]!r}") from None

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDiedError(f"gone: {self._stderr_tail()}") from None
        return self.receive(timeout)

    def _stderr_tail(self) -> str:
        self._log.flush()
        lines = self._log_path.read_text(errors="replace").strip().splitlines()
        return " / ".join(lines[-3:]) or "no output"

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._log.close()


def measure_interleaved(
    pythons: dict[str, Path], runs: Sequence[Run], settings: Settings, logs: Path
) -> None:
    """Fill ``runs`` in place: start a worker for each, prepare each scenario, take turns timing."""
    pool = _Pool(runs)
    try:
        pool.start(pythons, logs, settings.processes)
        rep_timeout = 30 + 20 * settings.rep_s
        for scenario in settings.scenarios:
            print(f"  {scenario}", file=sys.stderr, flush=True)
            prepare = {
                "op": "prepare",
                "scenario": scenario,
                "warmup_s": settings.warmup_s,
                "rep_s": settings.rep_s,
            }
            for worker in pool.live():
                check = pool.ask(worker, prepare, rep_timeout + 20 * settings.warmup_s)
                if check is not None and "error" not in runs[worker[0]].checks.get(scenario, {}):
                    runs[worker[0]].checks[scenario] = check  # a worker's error is its run's
            timed = [worker for worker in pool.live() if runs[worker[0]].usable(scenario)]
            # Each process takes its share of the repetitions, so a run's sample count stays --reps.
            for rep in range(max(1, -(-settings.reps // max(1, settings.processes)))):
                shift = rep % len(timed) if timed else 0
                for worker in timed[shift:] + timed[:shift]:
                    if pool.alive(worker) and runs[worker[0]].usable(scenario):
                        sample = pool.ask(worker, {"op": "time", "scenario": scenario}, rep_timeout)
                        if sample is not None:
                            runs[worker[0]].add_sample(scenario, sample)
            if settings.profile_dir is not None:
                for worker in timed:
                    index, seed = worker
                    if seed != 0 or not pool.alive(worker):
                        continue  # one profile per run is enough
                    path = settings.profile_dir / f"{runs[index].env}-{runs[index].mode}-{scenario}.prof"
                    pool.ask(
                        worker, {"op": "profile", "scenario": scenario, "path": str(path)}, 5 * rep_timeout
                    )
        for worker in pool.live():
            goodbye = pool.ask(worker, {"op": "finish"}, 30)
            if goodbye is not None:
                runs[worker[0]].metric_names = goodbye["metric_names"]
    finally:
        pool.close()


Worker = tuple[int, int]
"""A worker process: its run's index into ``runs`` and its hash seed."""


class _Pool:
    """The live workers; a worker that fails is recorded on its run, and the run's workers dropped."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self._runs = runs
        self._workers: dict[Worker, WorkerProcess] = {}

    def start(self, pythons: dict[str, Path], logs: Path, processes: int) -> None:
        for index, run in enumerate(self._runs):
            python = pythons.get(run.env)
            if python is None:
                run.status, run.reason = "unavailable", f"no {run.env} environment"
                continue
            for seed in range(max(1, processes)):
                log = logs / f"{run.env}-{run.mode}-{seed}.log"
                try:
                    self._workers[index, seed] = WorkerProcess(python, run.mode, log, hash_seed=seed)
                except OSError as exc:
                    run.fail(f"cannot start {python}: {exc}")
                    break
        # All workers import at once; then each says whether its mode is available.
        for worker in self.live():
            hello = self.ask(worker, None, _START_TIMEOUT_S)
            if hello is not None and self.alive(worker):
                self._runs[worker[0]].start(hello)
                if self._runs[worker[0]].status != "ok":
                    self._drop_run(worker[0])

    def live(self) -> list[Worker]:
        return sorted(self._workers)

    def alive(self, worker: Worker) -> bool:
        return worker in self._workers

    def ask(self, worker: Worker, message: dict[str, Any] | None, timeout: float) -> dict[str, Any] | None:
        """The worker's reply to ``message`` (its greeting if None); None once it failed."""
        try:
            process = self._workers[worker]
            return process.receive(timeout) if message is None else process.request(message, timeout)
        except WorkerDiedError as exc:
            self._runs[worker[0]].fail(f"worker failed: {exc}")
            self._drop_run(worker[0])  # a run's figures come from all its processes or none
            return None

    def _drop_run(self, index: int) -> None:
        for worker in [w for w in self._workers if w[0] == index]:
            self._workers.pop(worker).close()

    def close(self) -> None:
        for worker in self.live():
            self._workers.pop(worker).close()
