"""The lock files: one resolution of every range we declare, and what CI installs, exactly.

``python3 scripts/dev.py lock`` writes them with uv; every other job installs from them with
pip (``--require-hashes --no-deps``). These checks need no registry: a range changed without
re-locking, or an environment that is not the lock, fails here.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
_WORKSPACE = {"llmledger-instrumentation", "llmledger-exporter"}


def pins(lock: Path) -> dict[str, Version]:
    """Each package's locked version for this interpreter and platform (markers evaluated)."""
    found: dict[str, Version] = {}
    for line in lock.read_text().splitlines():
        if not line or line[0].isspace() or line.startswith("#"):
            continue
        spec, _, marker = line.rstrip(" \\").partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = spec.strip().partition("==")
        assert version, f"{lock.name}: {line!r} is not pinned"
        found[canonicalize_name(name)] = Version(version)
    return found


def declared() -> list[Requirement]:
    """Every requirement the workspace declares: both distributions (extras included) and the dev tools."""
    requirements: list[str] = []
    for member in ("instrumentation", "exporter"):
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        requirements += project["dependencies"]
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirements.append(line)
    return [
        Requirement(text)
        for text in requirements
        if canonicalize_name(Requirement(text).name) not in _WORKSPACE
    ]


def test_every_declared_range_holds_its_locked_version() -> None:
    locked = pins(DEV_LOCK)
    wrong = [
        f"{requirement} (locked {locked.get(canonicalize_name(requirement.name))})"
        for requirement in declared()
        if requirement.marker is None or requirement.marker.evaluate()
        if canonicalize_name(requirement.name) not in locked
        or not requirement.specifier.contains(locked[canonicalize_name(requirement.name)], prereleases=True)
    ]
    assert wrong == [], "re-lock with: python3 scripts/dev.py lock"


def test_the_runtime_lock_is_the_dev_locks_runtime_part() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_lock_names_no_host_and_no_path() -> None:
    for lock in (RUNTIME_LOCK, DEV_LOCK):
        text = lock.read_text()
        assert "://" not in text
        assert "-e " not in text
        assert str(ROOT) not in text


def test_this_environment_is_the_lock() -> None:
    """What CI runs in: every locked package installed at its locked version."""
    marker = Path(sys.prefix) / ".llmledger-installed-from"
    installed_from = marker.read_text().strip() if marker.exists() else "not by scripts/dev.py"
    if installed_from != DEV_LOCK.name:
        pytest.skip(f"this environment was installed from {installed_from}, not {DEV_LOCK.name}")
    different = {
        name: (str(version), _installed(name))
        for name, version in pins(DEV_LOCK).items()
        if _installed(name) != str(version)
    }
    assert different == {}


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
