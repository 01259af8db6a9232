"""A real S3 endpoint on loopback for tests and benchmarks.

:class:`MotoServer` runs ``moto.server`` in a child process bound to
127.0.0.1 on a free port, so that every process (the test process, the
flusher, writer processes) talks to it over HTTP exactly as it would to S3.
In-process mocks cannot be reached from another process and cannot show how
conditional writes behave across processes.

    with MotoServer() as server:
        server.create_bucket("data")
        store = open_store("s3://data/db", endpoint_url=server.endpoint_url)

The server stops by itself when the context exits, and is killed (never
left running) if it does not stop in time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

__all__ = ["MotoServer", "free_port", "S3_TEST_CREDENTIALS"]

#: Credentials moto accepts; they never leave loopback.
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MotoServer:
    """A moto S3 server in a child process on a loopback port."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 30.0):
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "MotoServer":
        env = dict(os.environ)
        env.update(S3_TEST_CREDENTIALS)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self._proc.returncode} at start")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1.0):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not answer on {self.endpoint_url} within {self.start_timeout}s")
                time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def client(self):
        """A boto3 S3 client for this server (boto3 must be installed)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API)."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
