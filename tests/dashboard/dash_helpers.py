"""Helpers for the dashboard tests: a real mesh with its dashboard, and a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.meshkit import REPO, UpProcess, free_port, kill_leftovers, repo_env, workload_pids

__all__ = ["CHROMIUM", "REPO", "MeshWithDashboard", "chromium_or_skip", "cli", "free_port",
           "start_browser", "wait_until", "workload_pids"]

ENV = repo_env()
for _name in list(ENV):
    if _name.startswith("MYCELIUM_"):
        del ENV[_name]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000")


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


class MeshWithDashboard(UpProcess):
    """``mycelium up --nodes N --edge-port P --ui-port U`` in the background."""

    def __init__(self, home: Path, nodes: int = 3) -> None:
        self.home = home
        self.edge_port = free_port()
        self.digests: dict[str, str] = {}
        super().__init__(
            [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--nodes", str(nodes),
             "--edge-port", str(self.edge_port), "--ui-port", str(free_port())], ENV)
        line = self.wait_line("dashboard http://", 60.0)
        self.ui_url = line.split("dashboard ", 1)[1].strip()

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after 60 s), then kill leftover workloads; the exit code."""
        code = super().stop()
        kill_leftovers(self.home)  # last resort after a failure
        return code


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
