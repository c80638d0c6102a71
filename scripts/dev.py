#!/usr/bin/env python3
"""Set up the workspace's virtual environment and run a job in it.

Needs only Python 3.11+ (``python3 -m venv`` and pip). Usage::

    python3 scripts/dev.py demo     # install and run `llmledger demo` on the embedded store
    python3 scripts/dev.py test     # install with test tooling and run the test suite
    python3 scripts/dev.py lint     # ruff + pyright (strict for src/)
    python3 scripts/dev.py test-oldest  # instrumentation tests on the oldest openai we claim
    python3 scripts/dev.py bench    # benchmarks, see docs/benchmarks.md
    python3 scripts/dev.py lock     # re-resolve the lock files with uv (needs the registry)

The environment lives in ``.venv`` (``LLMLEDGER_VENV`` overrides). Installation is skipped
when nothing that defines it changed since the last run (a stamp of the files' hashes).

Every package is installed at the version and with the hashes in ``requirements.lock``
(``demo``) or ``requirements-dev.lock`` (the rest), one resolution made by ``uv pip compile``
from the ranges in the pyproject files and ``requirements-dev.txt``. Only pip is needed to
install them; uv is needed only to lock. ``LLMLEDGER_UNLOCKED=1`` installs the newest
versions within the ranges instead: an explicit choice, said on the terminal, never a
silent fallback (and never taken by CI).
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
# opentelemetry-exporter-otlp-common (and its siblings) to the beta before the one the
# protobuf exporters pin; they work with either, so they are installed without their pins,
# and the lock overrides those pins.
DEV_NO_DEPS = [
    "opentelemetry-exporter-otlp-json-http",
    "opentelemetry-exporter-otlp-json-common",
    "opentelemetry-proto-json",
]
LOCK_OVERRIDES = [
    "opentelemetry-exporter-otlp-common",
    "opentelemetry-proto-json",
    "opentelemetry-exporter-http-transport",
]
LOCK_HEADER = (
    "# Every package at one version, with its files' hashes: written by `python3 scripts/dev.py lock`\n"
    "# (uv pip compile, from the ranges in the pyproject files and requirements-dev.txt); do not edit.\n"
)
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
STAMP_INPUTS = [
    "instrumentation/pyproject.toml",
    "exporter/pyproject.toml",
    "requirements-dev.txt",
    "requirements.lock",
    "requirements-dev.lock",
]
# Written into the environment: which install it holds (tests/test_lock.py reads it).
INSTALLED_FROM = ".llmledger-installed-from"
# The oldest openai release the instrumentation claims (package.py `_instruments`).
OLDEST_OPENAI = "openai==3.0.0"


def _stamp(extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for rel in STAMP_INPUTS:
        path = ROOT / rel
        digest.update(path.read_bytes() if path.exists() else b"(absent)")
    return digest.hexdigest()


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure_env(
    with_dev: bool, env_dir: Path = VENV, packages: list[str] | None = None, *, oldest: bool = False
) -> None:
    """Create ``env_dir`` if needed and install into it unless the stamp says it is there.

    ``packages`` replaces the workspace's own (editable) packages; ``oldest`` installs the lock
    without openai, then the oldest openai release claimed.
    """
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by an older python3
        sys.exit(f"llmledger needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    py = _python(env_dir)
    if not py.exists():
        print(f"creating virtual environment in {env_dir}", flush=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    specs = list(RUNTIME if packages is None else packages)
    unlocked = os.environ.get("LLMLEDGER_UNLOCKED", "") not in ("", "0")
    stamp_file = env_dir / ".llmledger-stamp"
    wanted = _stamp(f"{with_dev}{specs}{DEV_NO_DEPS if with_dev else ''}{unlocked}{oldest}")
    have = stamp_file.read_text() if stamp_file.exists() else ""
    # A dev install is a superset of the runtime one.
    if have == wanted or (not with_dev and have == _stamp(f"{True}{specs}{DEV_NO_DEPS}{unlocked}{oldest}")):
        return
    print(f"installing into {env_dir.name} (first run takes a minute)", flush=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if unlocked:
        print(
            "LLMLEDGER_UNLOCKED=1: installing the newest versions within the ranges, not the lock", flush=True
        )
        subprocess.run([*pip, *specs, *(DEV if with_dev else [])], check=True)
        if with_dev:
            subprocess.run([*pip, "--no-deps", *DEV_NO_DEPS], check=True)
        installed_from = "ranges"
    else:
        lock = DEV_LOCK if with_dev else RUNTIME_LOCK
        locked = _without(lock, "openai") if oldest else lock
        try:
            # Exactly the locked files (--require-hashes), nothing resolved here (--no-deps):
            # the lock is the whole resolution.
            subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", str(locked)], check=True)
            subprocess.run([*pip, "--no-deps", *specs], check=True)
        except subprocess.CalledProcessError:
            sys.exit(
                f"installing the locked versions ({lock.name}) failed (see above). To install the newest "
                "versions within the ranges instead, run again with LLMLEDGER_UNLOCKED=1."
            )
        finally:
            if locked != lock:
                locked.unlink()
        installed_from = lock.name
    if oldest:
        subprocess.run([*pip, OLDEST_OPENAI], check=True)
        installed_from = f"{installed_from} with {OLDEST_OPENAI}"
    (env_dir / INSTALLED_FROM).write_text(installed_from + "\n")
    stamp_file.write_text(wanted)


def _without(lock: Path, name: str) -> Path:
    """A copy of ``lock`` without ``name``'s entry (its line and the hash lines that follow)."""
    kept: list[str] = []
    skipping = False
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace():
            skipping = line.split("==", 1)[0].strip().lower() == name
        if not skipping:
            kept.append(line)
    copy = lock.with_name(f".{lock.name}.without-{name}")
    copy.write_text("\n".join(kept) + "\n")
    return copy


def lock() -> int:
    """Re-resolve both lock files with uv: newest within the ranges, keeping pins that still fit."""
    ensure_env(with_dev=True)
    uv = [str(BIN / "uv"), "pip", "compile", "--quiet", "--universal", "--python-version", "3.11"]
    uv += ["--generate-hashes", "--no-header", "--no-annotate"]
    uv += ["--no-emit-package", "llmledger-instrumentation", "--no-emit-package", "llmledger-exporter"]
    # Relative paths: the lock must not name this checkout's location.
    workspace = "-e ./instrumentation\n-e ./exporter[embedded,demo]\n"
    overrides = ROOT / ".lock-overrides.txt"
    overrides.write_text("\n".join(LOCK_OVERRIDES) + "\n")
    try:
        status = subprocess.run(
            [*uv, "-", "-o", str(RUNTIME_LOCK)], input=workspace, text=True, cwd=ROOT
        ).returncode
        if status == 0:
            dev_inputs = workspace + "-r requirements-dev.txt\n" + "\n".join(DEV_NO_DEPS) + "\n"
            # The runtime lock constrains the dev one: both hold the same versions.
            status = subprocess.run(
                [*uv, "-", "-c", str(RUNTIME_LOCK), "--override", str(overrides), "-o", str(DEV_LOCK)],
                input=dev_inputs,
                text=True,
                cwd=ROOT,
            ).returncode
    finally:
        overrides.unlink()
    for path in (RUNTIME_LOCK, DEV_LOCK):
        if status == 0 and not path.read_text().startswith(LOCK_HEADER):
            path.write_text(LOCK_HEADER + path.read_text())
    return status


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
        ensure_env(with_dev=True, env_dir=oldest, packages=["-e", str(ROOT / "instrumentation")], oldest=True)
        return run([str(_python(oldest)), "-m", "pytest", "tests/instrumentation", *rest])
    if job == "lint":
        ensure_env(with_dev=True)
        status = run([str(BIN / "ruff"), "check", "."])
        status |= run([str(BIN / "ruff"), "format", "--check", "."])
        status |= run([str(BIN / "pyright")])
        return status
    if job == "lock":
        return lock()
    if job == "bench":
        ensure_env(with_dev=True)
        return run([str(PY), str(ROOT / "bench" / "run.py"), *rest])
    print(__doc__)
    return 0 if job in {"help", "-h", "--help"} else 2


if __name__ == "__main__":
    sys.exit(main())
