"""A real ``zoo serve`` in a fresh process on ephemeral ports, as a user starts it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time


class ServerProcess:
    """``with ServerProcess([...args], cwd, log_path) as server:`` -> ``server.rest_url`` (http://host:port) and
    ``server.grpc_address`` (host:port); leaving the block sends SIGTERM (unless ``send`` sent one already), waits for
    the exit and records ``returncode`` and ``log``."""

    def __init__(self, args: list[str], cwd: str, log_path: str, startup_timeout: float = 300):
        self.args, self.cwd, self.log_path, self.timeout = args, str(cwd), log_path, startup_timeout
        self.rest_url = self.grpc_address = ""
        self.stdout: list[str] = []
        self.returncode: int | None = None
        self.log = ""
        self.signalled = False

    def __enter__(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        self._err = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "serve", *self.args], cwd=self.cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.stdout.append(line)
            if m := re.match(r"REST\s+(http://\S+)", line):
                self.rest_url = m.group(1)
            if m := re.match(r"gRPC\s+(\S+)", line):
                self.grpc_address = m.group(1)
            if line.startswith("Ctrl-C"):
                return self
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"zoo serve did not start: {''.join(self.stdout)}\n{open(self.log_path).read()[-3000:]}")

    def send(self, sig: int) -> None:
        """Send ``sig`` without waiting (a second SIGTERM would make the server stop at once)."""
        self.proc.send_signal(sig)
        self.signalled = True

    def log_so_far(self) -> str:
        self._err.flush()
        with open(self.log_path) as fh:
            return fh.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.returncode is None:
            if not self.signalled:
                self.send(sig)
            self.returncode = self.proc.wait(timeout=120)
            self._err.close()
            self.log = open(self.log_path).read()
        return self.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()
