"""Fixtures: no collector outlives its test; a TLS + bearer-token collector shared by the protocol tests; a free port."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import CollectorProcess

TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def collectors_end_with_their_test() -> Iterator[None]:
    """A test that fails midway leaves no collector (nor its drain process) running behind it.

    Collectors started by a wider fixture before the test (``secure_collector``) are that
    fixture's to end.
    """
    started = len(CollectorProcess.started)
    yield
    CollectorProcess.close_started_since(started)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def secure_collector(
    tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]
) -> Iterator[CollectorProcess]:
    """A collector with TLS on both ports, a bearer token and a 1 MiB request limit."""
    cert, key = tls_files
    root = tmp_path_factory.mktemp("secure")
    context = ssl.create_default_context(cafile=str(cert))
    collector = CollectorProcess(
        root / "data",
        f"chdb://{root / 'store'}",
        args=[
            "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--max-request-bytes", "1MiB",
            "--spool-segment-bytes", "4MiB", "--spool-max-bytes", "64MiB",
        ],
        env={"LLMLEDGER_COLLECTOR_AUTH_TOKEN": TOKEN},
        ssl_context=context,
    ).start()  # fmt: skip
    try:
        yield collector
        assert collector.stop() == 0, collector.log()
    finally:
        collector.close()


def free_port() -> int:
    """A loopback port nobody listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
