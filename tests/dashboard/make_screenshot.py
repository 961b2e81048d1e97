"""Makes docs/dashboard.png: a 3-node mesh with traffic, crashes and a blue/green update.

Not a test (pytest does not collect it). Run from the repository root:

    python tests/dashboard/make_screenshot.py [docs/dashboard.png] [--traffic 60]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dash_helpers import REPO, MeshWithDashboard, cli, start_browser, wait_until

from mycelium.home import Home
from mycelium.spores import keygen, publish


def traffic(base: str, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        path = "/crashy/crash" if n % 500 == 0 else ("/crashy/" if n % 3 == 0 else "/hello/")
        try:
            with urllib.request.urlopen(base + path, timeout=2) as resp:
                resp.read()
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.03)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default=str(REPO / "docs" / "dashboard.png"))
    parser.add_argument("--traffic", type=float, default=60.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    home = Home(tmp / "home").ensure()
    keygen(home)
    hello = REPO / "examples" / "hello" / "hello"
    v1 = publish(home, binary=hello, manifest={"name": "hello", "version": "1.0.0"})
    v2 = publish(home, binary=hello, manifest={"name": "hello", "version": "2.0.0"})
    crashy = publish(home, binary=REPO / "examples" / "crashy" / "crashy",
                     manifest={"name": "crashy", "version": "1.0.0"})
    mesh = MeshWithDashboard(home.root)
    driver, profile = start_browser()
    stop = threading.Event()
    try:
        cli(home.root, "deploy", "hello", v1, "--max", "3")
        cli(home.root, "deploy", "crashy", crashy, "--max", "2")
        driver.set_window_size(1400, 1300)
        driver.get(mesh.ui_url)
        pump = threading.Thread(target=traffic, args=(f"http://127.0.0.1:{mesh.edge_port}",
                                                      stop), daemon=True)
        pump.start()
        time.sleep(args.traffic)
        cli(home.root, "deploy", "hello", v2, "--max", "3", "--warmup", "30", "--no-wait")
        wait_until(lambda: driver.execute_script(
            "return document.querySelectorAll('#apps .inst.blue.i-Ready').length > 0 &&"
            " document.querySelectorAll('#apps .inst.green.i-Ready').length > 0"), 30.0,
            "blue and green side by side")
        time.sleep(1.5)
        driver.save_screenshot(args.out)
        print(args.out)
    finally:
        stop.set()
        driver.quit()
        mesh.stop()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
