"""A real `prefect server start` on 127.0.0.1 with its own home, for tests and benchmarks (and for
anyone who wants the UI): started in its own process group, stopped by PID, always.

    with LocalPrefectServer(tmp / "prefect-home") as server:
        env = server.env()        # PREFECT_API_URL etc., for the processes that use it
        ...                       # stop everything that talks to it BEFORE leaving the block:
                                  # a serve process hangs on shutdown once the server is gone
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from reasonloop.flows.processes import stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect_executable() -> str:
    return str(Path(sys.executable).with_name("prefect"))


class LocalPrefectServer:
    def __init__(self, home: Path, port: int | None = None, startup_timeout: float = 120.0) -> None:
        self.home, self.port, self.startup_timeout = Path(home), port or free_port(), startup_timeout
        self.proc: subprocess.Popen | None = None
        self.log = self.home / "server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for processes that use this server (quiet, offline, fast runner polling)."""
        return {
            **os.environ, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_LOGGING_TO_API_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "1", **extra,
        }  # fmt: skip

    def start(self) -> LocalPrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in self.env(PREFECT_UI_ENABLED="false").items() if k != "PREFECT_API_URL"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({self.proc.returncode}); log: {self.log}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"prefect server not healthy after {self.startup_timeout} s; log: {self.log}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def __enter__(self) -> LocalPrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
