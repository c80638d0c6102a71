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


class WorkerDiedError(Exception):
    """The worker exited, hung, or answered something that is not a reply."""


class WorkerProcess:
    """One worker: requests go to its stdin, replies come from a reader thread."""

    def __init__(self, python: Path, mode: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
        env["PYTHONHASHSEED"] = "0"
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
        pool.start(pythons, logs)
        rep_timeout = 30 + 20 * settings.rep_s
        for scenario in settings.scenarios:
            print(f"  {scenario}", file=sys.stderr, flush=True)
            prepare = {
                "op": "prepare",
                "scenario": scenario,
                "warmup_s": settings.warmup_s,
                "rep_s": settings.rep_s,
            }
            for index in pool.live():
                check = pool.ask(index, prepare, rep_timeout + 20 * settings.warmup_s)
                if check is not None:
                    runs[index].checks[scenario] = check
            timed = [index for index in pool.live() if runs[index].usable(scenario)]
            for rep in range(settings.reps):
                shift = rep % len(timed) if timed else 0
                for index in timed[shift:] + timed[:shift]:
                    if pool.alive(index) and runs[index].usable(scenario):
                        sample = pool.ask(index, {"op": "time", "scenario": scenario}, rep_timeout)
                        if sample is not None:
                            runs[index].add_sample(scenario, sample)
            if settings.profile_dir is not None:
                for index in timed:
                    path = settings.profile_dir / f"{runs[index].env}-{runs[index].mode}-{scenario}.prof"
                    if pool.alive(index):
                        pool.ask(
                            index, {"op": "profile", "scenario": scenario, "path": str(path)}, 5 * rep_timeout
                        )
        for index in pool.live():
            goodbye = pool.ask(index, {"op": "finish"}, 30)
            if goodbye is not None:
                runs[index].metric_names = goodbye["metric_names"]
    finally:
        pool.close()


class _Pool:
    """The live workers, by index into ``runs``; a worker that fails is recorded and dropped."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self._runs = runs
        self._workers: dict[int, WorkerProcess] = {}

    def start(self, pythons: dict[str, Path], logs: Path) -> None:
        for index, run in enumerate(self._runs):
            python = pythons.get(run.env)
            if python is None:
                run.status, run.reason = "unavailable", f"no {run.env} environment"
                continue
            try:
                self._workers[index] = WorkerProcess(python, run.mode, logs / f"{run.env}-{run.mode}.log")
            except OSError as exc:
                run.fail(f"cannot start {python}: {exc}")
        # All workers import at once; then each says whether its mode is available.
        for index in self.live():
            hello = self.ask(index, None, _START_TIMEOUT_S)
            if hello is not None:
                self._runs[index].start(hello)
                if self._runs[index].status != "ok":
                    self._drop(index)

    def live(self) -> list[int]:
        return sorted(self._workers)

    def alive(self, index: int) -> bool:
        return index in self._workers

    def ask(self, index: int, message: dict[str, Any] | None, timeout: float) -> dict[str, Any] | None:
        """The worker's reply to ``message`` (its greeting if None); None once it failed."""
        try:
            worker = self._workers[index]
            return worker.receive(timeout) if message is None else worker.request(message, timeout)
        except WorkerDiedError as exc:
            self._runs[index].fail(f"worker failed: {exc}")
            self._drop(index)
            return None

    def _drop(self, index: int) -> None:
        self._workers.pop(index).close()

    def close(self) -> None:
        for index in self.live():
            self._drop(index)
