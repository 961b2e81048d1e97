"""Benchmark Flow A on a large binary against `sha256sum` on the same file.

    python bench/spores.py [--size-mb 200] [--rounds 3]

Creates a random binary in a temp dir, times `sha256sum` on it, then pack, publish and verify
(in-process API, each in a fresh child process so that its peak RSS growth can be measured
with getrusage), and the `mycelium publish` / `mycelium verify` commands end to end; and the
time until examples/hello answers /health, against a bare socket server. Reports
each as the median over the rounds and as a ratio to sha256sum (goal <= 2x), and the peak
RSS growth (goal < 64 MB). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = r"""
import json, resource, sys, time, shutil
from pathlib import Path
from mycelium.home import Home
from mycelium.spores import Repo, load_signing_key, load_trusted, pack, publish, verify, extract
op, home_dir, binary, manifest, work = sys.argv[1:6]
home = Home(Path(home_dir)); key = load_signing_key(home); trusted = load_trusted(home)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if op == "pack":
    pack(binary, manifest, key, Path(work) / "out.spore")
elif op == "publish":
    publish(home, binary=binary, manifest=manifest)
elif op == "verify":
    verify(Path(work) / "out.spore", trusted)
elif op == "verify-repo":
    repo = Repo(home.repo); repo.verify(repo.digests()[0], trusted)
elif op == "extract":
    extract(Path(work) / "out.spore", Path(work) / "inst", trusted)
elapsed = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "rss_growth_kb": after - before}))
"""


def _sha256sum(path: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
    return time.perf_counter() - t


def _child(op: str, home: Path, binary: Path, manifest: Path, work: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHILD, op, str(home), str(binary),
                          str(manifest), str(work)], check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mycelium", *args], check=True, capture_output=True)
    return time.perf_counter() - t


BARE_SERVER = r"""
import os, signal, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen()
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
while True:
    c, _ = s.accept(); c.recv(1000)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); c.close()
"""
HELLO = Path(__file__).resolve().parents[1] / "examples" / "hello" / "hello"


def _time_to_healthy(argv: list[str]) -> float:
    """Spawn ``argv`` with a free PORT; seconds until GET /health answers 200."""
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, "PORT": str(port)})
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if b" 200 " in c.recv(100):
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="spores-bench-") as tmp:
        work = Path(tmp)
        binary = work / "big-binary"
        with open(binary, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1024 * 1024))
        manifest = work / "manifest.json"
        manifest.write_text('{"name": "big", "version": "1.0.0"}')
        home = work / "home"
        subprocess.run([sys.executable, "-m", "mycelium", "keygen", "--home", str(home)],
                       check=True, capture_output=True)
        _sha256sum(binary)  # warm the page cache

        runs: dict[str, list[float]] = {k: [] for k in (
            "sha256sum", "pack", "publish", "verify", "verify-repo", "extract",
            "cli publish", "cli verify")}
        rss: dict[str, int] = {}
        for _ in range(args.rounds):
            runs["sha256sum"].append(_sha256sum(binary))
            for op in ("pack", "verify", "extract", "publish", "verify-repo"):
                r = _child(op, home, binary, manifest, work)
                runs[op].append(r["seconds"])
                rss[op] = max(rss.get(op, 0), int(r["rss_growth_kb"]))
            shutil.rmtree(home / "repo")
            shutil.rmtree(work / "inst", ignore_errors=True)
            runs["cli publish"].append(_cli("publish", str(binary), "--manifest", str(manifest),
                                            "--home", str(home)))
            digest = next(iter(os.listdir(home / "repo")))[:-len(".spore")]
            runs["cli verify"].append(_cli("verify", digest, "--home", str(home)))
            shutil.rmtree(home / "repo")

        starts: dict[str, list[float]] = {"bare socket server": [], "hello": [],
                                          "hello via shebang": []}
        for _ in range(max(5, args.rounds)):
            starts["bare socket server"].append(
                _time_to_healthy([sys.executable, "-c", BARE_SERVER]))
            starts["hello"].append(_time_to_healthy([sys.executable, str(HELLO)]))
            starts["hello via shebang"].append(_time_to_healthy([str(HELLO)]))
        start_med = {k: statistics.median(v) for k, v in starts.items()}

        med = {k: statistics.median(v) for k, v in runs.items()}
        base = med["sha256sum"]
        print(f"binary {args.size_mb} MB, {args.rounds} rounds, median seconds "
              f"(ratio to sha256sum {base:.3f} s); peak RSS growth")
        for k, v in med.items():
            growth = f"  rss +{rss[k] / 1024:.1f} MB" if k in rss else ""
            print(f"  {k:<12} {v:7.3f} s  {v / base:5.2f}x{growth}")
        print("time to healthy (median): " + ", ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in start_med.items()))
        summary = {
            "bench": "spores", "size_mb": args.size_mb, "rounds": args.rounds,
            "machine": f"{platform.machine()} {os.cpu_count()} cpus {platform.python_version()}",
            "sha256sum_s": round(base, 4),
            "seconds": {k: round(v, 4) for k, v in med.items()},
            "ratio_to_sha256sum": {k: round(v / base, 3) for k, v in med.items()},
            "peak_rss_growth_mb": {k: round(v / 1024, 2) for k, v in rss.items()},
            "time_to_healthy_ms": {k: round(v * 1000, 1) for k, v in start_med.items()},
            "goal_ratio_met": all(med[k] / base <= 2.0 for k in ("pack", "publish", "verify")),
            "goal_rss_met": all(v / 1024 < 64 for v in rss.values()),
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
