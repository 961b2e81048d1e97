"""Shared by bench/rollout.py, bench/secret_delivery.py, bench/chaos.py and bench/canary.py: a real
``mycelium up`` on a temp home, the published example spores, timed rollouts and the steady
load of tests/reliability (keep-alive clients)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "reliability"))

from load import Load  # noqa: E402

from bench._common import free_port  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.operator.client import ControlClient  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

__all__ = ["ENV", "REPO", "Load", "Mesh", "cli", "print_requests", "publish_examples",
           "timed_deploy"]

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
HELLO = REPO / "examples" / "hello" / "hello"
CRASHY = REPO / "examples" / "crashy" / "crashy"


def publish_examples(root: Path) -> dict[str, str]:
    """Key + hello v1/v2 + solo (hello named solo) + crashy (crashes at start)."""
    home = Home(root).ensure()
    keygen(home)
    return {
        "v1": publish(home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"}),
        "v2": publish(home, binary=HELLO, manifest={"name": "hello", "version": "2.0.0",
                                                    "env": {"HELLO_VERSION": "2.0.0"}}),
        "solo": publish(home, binary=HELLO, manifest={"name": "solo", "version": "1.0.0"}),
        "crashy": publish(home, binary=CRASHY, manifest={
            "name": "crashy", "version": "1.0.0", "env": {"CRASH_AT_START": "1"}}),
    }


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``mycelium <args> --home root``."""
    return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(root)],
                          capture_output=True, text=True, env=ENV, check=False, timeout=300,
                          cwd=REPO)


def timed_deploy(root: Path, app: str, digest: str, warmup: float) -> float:
    """``mycelium deploy APP DIGEST --max 3 --warmup W`` (a rollout): seconds it took.

    Raises:
        SystemExit: the deploy failed (its stderr says why).
    """
    started = time.monotonic()
    result = cli(root, "deploy", app, digest, "--max", "3", "--warmup", str(warmup))
    took = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"deploy failed: {result.stderr}")
    return took


def print_requests(load: Load) -> int:
    """Print the load's requests and failures (by error); returns how many it sent."""
    total = load.stats.ok + load.stats.failed
    print(f"requests: {total}, failed: {load.stats.failed} {dict(load.stats.errors)}")
    return total


class Mesh:
    """``mycelium up --nodes 3`` on ``root`` with a free edge port, until :meth:`stop`."""

    def __init__(self, root: Path, config: str = "") -> None:
        if config:
            (root / "mycelium.toml").write_text(config)
        self.port = free_port()
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mycelium", "up", "--home", str(root), "--edge-port",
             str(self.port), "--nodes", "3"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=ENV, cwd=REPO)
        self.client = ControlClient(Home(root))
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.request("status")
                break
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the mesh did not start") from None
                time.sleep(0.05)

    def app(self, name: str) -> dict[str, Any]:
        """One app's status document."""
        for doc in self.client.request("status", app=name)["apps"]:
            if doc["app"] == name:
                return dict(doc)
        return {"instances": []}

    def ready(self, name: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait for ``count`` Ready instances of ``name`` (of its plan's digest)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.app(name)
            ready = [i for i in doc["instances"]
                     if i["state"] == "Ready" and i["digest"] == doc.get("digest")]
            if len(ready) >= count:
                return ready
            time.sleep(0.02)
        raise RuntimeError(f"{name}: not {count} Ready within {timeout}s")

    def stop(self) -> int:
        """SIGTERM the mesh and wait."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
