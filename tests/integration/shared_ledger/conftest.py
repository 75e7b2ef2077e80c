"""A real Redis server for the shared-ledger tests, on a free loopback port.

The server is Debian's ``redis-server`` (scripts/install-system-deps.sh installs it on a
fresh machine); the tests skip cleanly when neither it nor the ``redis`` extra is there.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

redis = pytest.importorskip("redis", reason="the redis extra is not installed")

SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process in a temporary directory: started, stopped, restarted
    on the same port (and, with ``persist``, the same data)."""

    def __init__(self, directory: Path, *, persist: bool = False, password: str | None = None):
        self.directory = directory
        self.port = free_port()
        self.persist = persist
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert SERVER is not None
        args = [
            SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
        ]
        args += ["--save", ""]
        if self.persist:  # every write on disk before it is acknowledged: a restart loses none
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError("redis-server exited at start") from None
                time.sleep(0.01)
        else:
            raise RuntimeError("redis-server did not answer")
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)


def _server(tmp_path_factory: pytest.TempPathFactory, **kwargs: object) -> Iterator[RedisServer]:
    if SERVER is None:
        pytest.skip("redis-server is not installed (scripts/install-system-deps.sh installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"), **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server shared by a test module; emptied before each test."""
    yield from _server(tmp_path_factory)


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def persistent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server of its own whose data survives a restart (append-only file)."""
    yield from _server(tmp_path_factory, persist=True)
