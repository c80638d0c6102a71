#!/usr/bin/env python3
"""Set up the workspace's virtual environment and run a job in it.

Needs only Python 3.11+ (``python3 -m venv`` and pip). Usage::

    python3 scripts/dev.py demo     # install and run `llmledger demo` on the embedded store
    python3 scripts/dev.py test     # install with test tooling and run the test suite
    python3 scripts/dev.py lint     # ruff + pyright (strict for src/)
    python3 scripts/dev.py test-oldest  # instrumentation tests on the oldest openai we claim
    python3 scripts/dev.py bench    # benchmarks, see docs/benchmarks.md

The environment lives in ``.venv`` (``LLMLEDGER_VENV`` overrides). Installation is skipped
when nothing that defines it changed since the last run (a stamp of the files' hashes).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("LLMLEDGER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"

RUNTIME = ["-e", str(ROOT / "instrumentation"), "-e", f"{ROOT / 'exporter'}[embedded,demo]"]
DEV = ["-r", str(ROOT / "requirements-dev.txt")]
# The SDK's OTLP/JSON exporters (tests/collector/test_signals.py) pin the shared
# opentelemetry-exporter-otlp-common to the beta before the one the protobuf exporters pin;
# they work with either, so they are installed without their pins.
DEV_NO_DEPS = [
    "opentelemetry-exporter-otlp-json-http",
    "opentelemetry-exporter-otlp-json-common",
    "opentelemetry-proto-json",
]
STAMP_INPUTS = ["instrumentation/pyproject.toml", "exporter/pyproject.toml", "requirements-dev.txt"]
# The oldest openai release the instrumentation claims (package.py `_instruments`).
OLDEST_OPENAI = "openai==3.0.0"


def _stamp(extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for rel in STAMP_INPUTS:
        digest.update((ROOT / rel).read_bytes())
    return digest.hexdigest()


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure_env(with_dev: bool, env_dir: Path = VENV, packages: list[str] | None = None) -> None:
    """Create ``env_dir`` if needed and install ``packages`` unless the stamp says they are there."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by an older python3
        sys.exit(f"llmledger needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    py = _python(env_dir)
    if not py.exists():
        print(f"creating virtual environment in {env_dir}", flush=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    specs = list(RUNTIME if packages is None else packages)
    stamp_file = env_dir / ".llmledger-stamp"
    wanted = _stamp(f"{with_dev}{specs}{DEV_NO_DEPS if with_dev else ''}")
    have = stamp_file.read_text() if stamp_file.exists() else ""
    # A dev install is a superset of the runtime one.
    if have == wanted or (not with_dev and have == _stamp(f"{True}{specs}{DEV_NO_DEPS}")):
        return
    print(f"installing into {env_dir.name} (first run takes a minute)", flush=True)
    args = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *specs]
    if with_dev:
        args += DEV
    subprocess.run(args, check=True)
    if with_dev:
        no_deps = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
        subprocess.run([*no_deps, *DEV_NO_DEPS], check=True)
    stamp_file.write_text(wanted)


def run(argv: list[str]) -> int:
    return subprocess.call(argv, cwd=ROOT)


def main() -> int:
    job = sys.argv[1] if len(sys.argv) > 1 else "help"
    rest = sys.argv[2:]
    if job == "demo":
        ensure_env(with_dev=False)
        return run([str(BIN / "llmledger"), "demo", *rest])
    if job == "test":
        ensure_env(with_dev=True)
        return run([str(PY), "-m", "pytest", *rest])
    if job == "test-oldest":
        oldest = ROOT / ".venv-oldest"
        ensure_env(
            with_dev=True, env_dir=oldest, packages=["-e", str(ROOT / "instrumentation"), OLDEST_OPENAI]
        )
        return run([str(_python(oldest)), "-m", "pytest", "tests/instrumentation", *rest])
    if job == "lint":
        ensure_env(with_dev=True)
        status = run([str(BIN / "ruff"), "check", "."])
        status |= run([str(BIN / "ruff"), "format", "--check", "."])
        status |= run([str(BIN / "pyright")])
        return status
    if job == "bench":
        ensure_env(with_dev=True)
        return run([str(PY), str(ROOT / "bench" / "run.py"), *rest])
    print(__doc__)
    return 0 if job in {"help", "-h", "--help"} else 2


if __name__ == "__main__":
    sys.exit(main())
