"""Fixtures of the gateway's tests: a real redis-server for the shared-state tests, the packaged SmolLM2."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.server.conftest import smollm2_loaded  # noqa: F401 -- a fixture the end-to-end test uses


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """$TEMPER_REDIS_URL, else a throwaway redis-server on loopback (no persistence), else None."""
    if os.environ.get("TEMPER_REDIS_URL"):
        yield os.environ["TEMPER_REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = _free_port()
    work = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server):
    """The session's Redis, emptied for this test."""
    if redis_server is None:
        return None
    import redis
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    return redis_server


@pytest.fixture(scope="session")
def tiny_verifier(tmp_path_factory):
    """A pair verifier trained for a few steps on 48 of the packaged pairs (seconds, not the real ~8 minutes):
    enough to test the plumbing, saving and loading; its scores mean little."""
    from temper.gateway.verifier import train, training_pairs
    rows = training_pairs()[::31][:48]
    folder = tmp_path_factory.mktemp("verifier") / "tiny"
    return train(rows, folder, epochs=1, progress=False), folder
