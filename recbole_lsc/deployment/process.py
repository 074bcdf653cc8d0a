"""The candidate service as a child process on a free loopback port: started, waited for, stopped.

The replay benchmark and the tests use it; the service is the same ``recbole-lsc serve`` a
user starts by hand, run with the interpreter of this process.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx

from recbole_lsc.errors import ConfigError


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServiceProcess:
    """``recbole-lsc serve`` with ``args`` (``--key=value`` strings) in a child process.

    ``start()`` returns once ``/health`` answers (or raises ConfigError with the child's last
    output lines, after ``startup_timeout`` seconds at most); ``stop()`` terminates it.
    """

    def __init__(self, args, host="127.0.0.1", port=None, startup_timeout=300.0, env=None):
        self.host, self.port = host, port or free_port(host)
        self.args = [*args, f"--serve_host={host}", f"--serve_port={self.port}"]
        self.startup_timeout, self.env = startup_timeout, env
        self.process, self._output = None, None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self._output = tempfile.TemporaryFile(mode="w+b")
        command = [sys.executable, "-m", "recbole_lsc.cli", "serve", *self.args]
        self.process = subprocess.Popen(command, stdout=self._output, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._tail()
                self.stop()
                raise ConfigError(f"the cloud service exited with status {self.process.returncode} before it "
                                  f"answered: {tail}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self._tail()
        self.stop()
        raise ConfigError(f"the cloud service did not answer on {self.url} within {self.startup_timeout:.0f} s: {tail}")

    def _tail(self, lines=3):
        self._output.seek(0)
        text = self._output.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self):
        """Terminate the service (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
