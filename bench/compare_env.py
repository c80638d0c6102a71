"""The separate virtual environment that holds the instrumentations llmledger is compared with.

OpenLLMetry and the contrib instrumentation (with the ``opentelemetry-util-genai`` and
``httpx`` it needs beside openai 3) never go into the project's ``.venv``: they live in
``.venv-bench`` (``LLMLEDGER_BENCH_VENV`` overrides), installed from the pins in
``bench/requirements-compare.txt``. As in ``scripts/dev.py``, installation is skipped while
a stamp of the inputs' hashes still matches. Standard library only: runs under any Python.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "bench" / "requirements-compare.txt"
VENV = Path(os.environ.get("LLMLEDGER_BENCH_VENV", ROOT / ".venv-bench"))
PYTHON = VENV / ("Scripts" if os.name == "nt" else "bin") / "python"
# llmledger's instrumentation is installed editable from here, so its metadata counts too.
_STAMP_INPUTS = (REQUIREMENTS, ROOT / "instrumentation" / "pyproject.toml")
_STAMP = VENV / ".llmledger-bench-stamp"


def _stamp() -> str:
    digest = hashlib.sha256()
    for path in _STAMP_INPUTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _pip_install(requirements: list[str]) -> str | None:
    """Install into the comparison environment; pip's complaint on failure, else None."""
    # cwd=ROOT: the requirements file names ./instrumentation relative to the checkout.
    completed = subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if completed.returncode == 0:
        return None
    errors = [line for line in completed.stderr.splitlines() if line.startswith("ERROR")]
    return " / ".join(errors[-2:]) or f"pip exited {completed.returncode}"


def _requirement_lines() -> list[list[str]]:
    lines: list[list[str]] = []
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line.split())
    return lines


def ensure_compare_env() -> Path:
    """Create or update the comparison environment; return its interpreter.

    When the pinned set does not install as a whole, each requirement is tried on its own so
    that whatever can be measured still is: a comparison package that is missing then shows
    up in the table as unavailable, with its import error.
    """
    if not PYTHON.exists():
        print(f"creating the comparison environment in {VENV}", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _stamp()
    if _STAMP.exists() and _STAMP.read_text() == wanted:
        return PYTHON
    print(
        "installing the comparison instrumentations (first run takes a minute)", file=sys.stderr, flush=True
    )
    problem = _pip_install(["-r", str(REQUIREMENTS)])
    if problem is None:
        _STAMP.write_text(wanted)
        return PYTHON
    print(f"the pinned set did not install ({problem}); trying one by one", file=sys.stderr, flush=True)
    for requirement in _requirement_lines():
        failure = _pip_install(requirement)
        if failure is not None:
            print(f"  could not install {' '.join(requirement)}: {failure}", file=sys.stderr, flush=True)
    # No stamp: the next run tries the full set again.
    return PYTHON
