"""Helpers for the dashboard tests: a real mesh with its dashboard, and a real headless Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
for _name in list(ENV):
    if _name.startswith("MYCELIUM_"):
        del ENV[_name]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000")


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "",
               poll: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a re-render replaced the element we held, an actor restarts
            last = exc
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate} "
                         f"(last error: {last!r})")


def cli(home: Path, *args: str, timeout: float = 60.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``mycelium <args> --home <home>`` as a real process."""
    return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **(env or {})}, check=False)


def workload_pids(home: Path) -> list[int]:
    """Every live process running a binary from this home's instances."""
    marker = str(home / "instances")
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in part for part in proc.info["cmdline"] or ()):
                pids.append(proc.info["pid"])
        except (psutil.Error, TypeError):
            continue
    return pids


class MeshWithDashboard:
    """``mycelium up --nodes N --edge-port P --ui-port U`` in the background."""

    def __init__(self, home: Path, nodes: int = 3) -> None:
        self.home = home
        self.edge_port = free_port()
        self.lines: list[str] = []
        self.digests: dict[str, str] = {}
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--nodes", str(nodes),
             "--edge-port", str(self.edge_port), "--ui-port", str(free_port())],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_line("dashboard http://", 60.0)
        self.ui_url = line.split("dashboard ", 1)[1].strip()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, text: str, timeout: float = 15.0) -> str:
        """Wait until a stdout line contains ``text``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no {text!r} line from the mesh; got:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.2))

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after 60 s); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in workload_pids(self.home):  # last resort after a failure
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        return int(self.proc.returncode)


def chromium_or_skip() -> None:
    """Skip when Chromium is missing; in CI (``CI`` set) a missing browser is a failure."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        message = (f"the dashboard's browser tests need {', '.join(missing)} "
                   f"(apt-get install -y chromium chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def start_browser() -> tuple[Any, Path]:
    """Headless Chromium through the system chromedriver (selenium-manager never runs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="mycelium-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    return driver, profile
