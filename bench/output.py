"""Benchmark: capturing workloads' output (``mycelium output``) on a real mesh.

One command:

    python bench/output.py [--seconds 10] [--rate-mb 50] [--apps 100]

- throughput: a workload writing ``--rate-mb`` MB/s of 100-byte lines for ``--seconds`` s, its
  stdout captured, against the same workload writing to /dev/null (and both as fast as they
  can); the mesh's CPU meanwhile; every line counted in the kept output (nothing lost);
- ``--follow`` latency: a workload writes a line with its time every 20 ms; ``mycelium output
  -f --json`` prints it; write → printed, p50/p99;
- ``--tail 10`` of an instance with 1 GB of kept output (written straight into the home):
  the CLI's wall time and the read alone;
- ``--apps`` apps x 3 nodes each writing 10 lines/s: the mesh's CPU over 10 s against the same
  mesh with silent workloads.

Prints figures and a final JSON line. The machine may be shared: the load is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import psutil  # noqa: E402

from bench._common import ENV, Up, head_commit, pct, wait  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.operator.output import kept_instances, read_output  # noqa: E402
from mycelium.output_files import INDEX_RECORD, Stream  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

WRITER = REPO / "bench" / "workloads" / "output-writer"


class Mesh(Up):
    """``mycelium up --nodes N`` on ``home``, with the figures this benchmark reads from it."""

    def __init__(self, home: Path, nodes: int) -> None:
        super().__init__(home, "--nodes", str(nodes))
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def all_ready(self, count: int, timeout: float = 300.0) -> None:
        """Wait until ``count`` instances (over every app) are Ready."""
        def ready() -> bool:
            docs = self.client.request("status")["apps"]
            return sum(1 for a in docs for i in a["instances"] if i["state"] == "Ready") >= count

        wait(ready, timeout, f"{count} Ready", interval=0.1)

    def stop_all(self) -> None:
        for doc in self.client.request("status")["apps"]:
            self.client.request("stop", app=doc["app"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not any(a["instances"] for a in self.client.request("status")["apps"]):
                return
            time.sleep(0.2)


def wait_for(path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        time.sleep(0.05)
    raise SystemExit(f"no report at {path}")


def blast(mesh: Mesh, home: Home, tmp: Path, name: str, rate: float, seconds: float,
          to: str) -> dict[str, Any]:
    reports = tmp / "reports"  # the workload runs as a uid of its own: a place it can write
    reports.mkdir(exist_ok=True)
    os.chmod(tmp, 0o711)
    os.chmod(reports, 0o1777)
    report = reports / f"{name}.json"
    digest = publish(home, binary=WRITER, manifest={"name": name, "version": "1", "env": {
        "OUT_MODE": "blast", "BLAST_RATE": str(rate), "BLAST_SECONDS": str(seconds),
        "BLAST_TO": to, "BLAST_REPORT": str(report)}})
    cpu0, t0 = mesh.cpu(), time.perf_counter()
    mesh.client.request("deploy", app=name, digest=digest, min=1, max=1, mem=1024)
    result = wait_for(report, seconds + 60)
    cpu = (mesh.cpu() - cpu0) / (time.perf_counter() - t0) * 100
    result["mesh_cpu_percent"] = cpu
    result["mb_per_s"] = result["bytes"] / result["seconds"] / 1e6
    if to == "stdout":
        time.sleep(0.5)  # a measuring pause: the watcher's next look indexes the last bytes
        kept = kept_instances(home.instances, name)
        stream = Stream(kept[0].directory, "stdout")
        first, end, _m = stream.extent()
        lines = 0
        for start in range(first, end, 64 << 20):
            lines += stream.read(start, min(end, start + (64 << 20))).count(b"\n")
        result.update(kept_lines=lines, kept_bytes=end - first, segments=len(stream.segments()))
    mesh.client.request("stop", app=name)
    return result


def follow_latency(mesh: Mesh, home: Home, seconds: float) -> list[float]:
    digest = publish(home, binary=WRITER, manifest={"name": "ticker", "version": "1", "env": {
        "OUT_MODE": "tick", "TICK_INTERVAL": "0.02"}})
    mesh.client.request("deploy", app="ticker", digest=digest, min=1, max=1)
    mesh.all_ready(1, 60)
    proc = subprocess.Popen([sys.executable, "-m", "mycelium", "output", "ticker", "-f",
                             "--json", "--home", str(home.root)], stdout=subprocess.PIPE,
                            env=ENV)
    assert proc.stdout is not None
    latencies: list[float] = []
    started = time.time()
    deadline = time.monotonic() + seconds + 30
    for raw in proc.stdout:
        now = time.time()
        written = float(orjson.loads(raw)["line"].split()[2])
        if written > started + 1.0:  # lines written once the follower runs, not its history
            latencies.append(now - written)
        if len(latencies) >= seconds / 0.02 or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    mesh.client.request("stop", app="ticker")
    return latencies


def big_tail(home: Home) -> tuple[list[float], list[float]]:
    directory = home.instances / "big@node-1#1" / "output"
    directory.mkdir(parents=True)
    (directory / "meta.json").write_bytes(orjson.dumps(
        {"instance": "big@node-1#1", "app": "big", "node": "node-1", "run": 0}))
    (directory / "exit.json").write_bytes(orjson.dumps(
        {"instance": "big@node-1#1", "reason": "exit code 0", "at": "", "output_tail": []}))
    block = b"".join(b"%012d %s\n" % (i, b"z" * 86) for i in range(10_000))  # 1 MB
    with open(directory / "stdout", "wb") as fh:
        for _ in range(1024):
            fh.write(block)
    (directory / "stderr").write_bytes(b"")
    now = time.time()
    (directory / "stdout.idx").write_bytes(INDEX_RECORD.pack(0, 1024 * len(block), now - 60,
                                                             now))
    cli, read = [], []
    for _ in range(7):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "mycelium", "output", "big", "--instance",
                              "big@node-1#1", "--tail", "10", "--home", str(home.root)],
                             capture_output=True, env=ENV, check=True).stdout
        cli.append(time.perf_counter() - t)
        assert out.count(b"\n") == 10, out
        t = time.perf_counter()
        lines = read_output(kept_instances(home.instances, "big"), tail=10)
        read.append(time.perf_counter() - t)
        assert len(lines) == 10
    shutil.rmtree(directory.parent)
    return cli, read


def scale_cpu(mesh: Mesh, home: Home, apps: int, interval: float, tag: str) -> float:
    digests = [publish(home, binary=WRITER, manifest={
        "name": f"{tag}{n}", "version": "1", "env": {"OUT_MODE": "talk",
                                                     "TALK_INTERVAL": str(interval)}})
        for n in range(apps)]
    for n, d in enumerate(digests):
        mesh.client.request("deploy", app=f"{tag}{n}", digest=d, min=1, max=3, cpu=0.01,
                            mem=64)
    mesh.all_ready(apps * 3)
    deadline = time.monotonic() + 30
    while mesh.ps.num_threads() > 40 and time.monotonic() < deadline:
        time.sleep(0.5)  # the start burst's pool workers go back first
    cpu0 = mesh.cpu()
    time.sleep(10.0)  # a measuring window, not a synchronisation
    cpu = (mesh.cpu() - cpu0) / 10.0 * 100
    mesh.stop_all()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate-mb", type=float, default=50.0)
    parser.add_argument("--apps", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-output-"))
    home = Home(tmp / "home").ensure()
    keygen(home)
    (home.root / "mycelium.toml").write_text("[logs]\noutput_max_mb = 100\noutput_files = 20\n")
    commit = head_commit()
    result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "commit": commit,
                              "load_at_start": round(os.getloadavg()[0], 2)}
    mesh = Mesh(home.root, nodes=1)
    try:
        rate = args.rate_mb * 1e6
        null = blast(mesh, home, tmp, "blast-null", rate, args.seconds, "/dev/null")
        cap = blast(mesh, home, tmp, "blast", rate, args.seconds, "stdout")
        fnull = blast(mesh, home, tmp, "fast-null", 0, args.seconds / 2, "/dev/null")
        fcap = blast(mesh, home, tmp, "fast", 0, args.seconds / 2, "stdout")
        lost = cap["lines"] - cap["kept_lines"]
        ratio = cap["mb_per_s"] / null["mb_per_s"]
        print(f"{args.rate_mb:g} MB/s for {args.seconds:g} s: captured {cap['mb_per_s']:.1f} MB/s"
              f" vs /dev/null {null['mb_per_s']:.1f} MB/s ({ratio:.2f}x);"
              f" mesh CPU {cap['mesh_cpu_percent']:.1f} % of a core (with /dev/null "
              f"{null['mesh_cpu_percent']:.1f} %); {cap['lines']} lines written, "
              f"{cap['kept_lines']} kept ({lost} lost), {cap['segments']} rotations")
        print(f"as fast as it can: captured {fcap['mb_per_s']:.0f} MB/s vs /dev/null "
              f"{fnull['mb_per_s']:.0f} MB/s ({fcap['mb_per_s'] / fnull['mb_per_s']:.2f}x); "
              f"mesh CPU {fcap['mesh_cpu_percent']:.1f} %; "
              f"{fcap['lines'] - fcap['kept_lines']} lines lost")
        result.update(
            rate_mb=args.rate_mb, captured_mb_s=round(cap["mb_per_s"], 2),
            null_mb_s=round(null["mb_per_s"], 2),
            throughput_ratio=round(cap["mb_per_s"] / null["mb_per_s"], 3),
            mesh_cpu_capture_pct=round(cap["mesh_cpu_percent"], 2),
            mesh_cpu_null_pct=round(null["mesh_cpu_percent"], 2),
            lines_written=cap["lines"], lines_kept=cap["kept_lines"], lines_lost=lost,
            fast_ratio=round(fcap["mb_per_s"] / fnull["mb_per_s"], 3),
            fast_captured_mb_s=round(fcap["mb_per_s"]), fast_null_mb_s=round(fnull["mb_per_s"]),
            fast_lines_lost=fcap["lines"] - fcap["kept_lines"],
            fast_mesh_cpu_pct=round(fcap["mesh_cpu_percent"], 2))

        lat = follow_latency(mesh, home, args.seconds)
        p50, p99 = pct(lat, 50) * 1000, pct(lat, 99) * 1000
        print(f"--follow latency write → printed over {len(lat)} lines: p50 {p50:.0f} ms, "
              f"p99 {p99:.0f} ms, max {max(lat) * 1000:.0f} ms")
        result.update(follow_p50_ms=round(p50, 1), follow_p99_ms=round(p99, 1),
                      follow_lines=len(lat))

        cli, read = big_tail(home)
        print(f"--tail 10 of 1 GB kept output: CLI wall p50 {statistics.median(cli) * 1000:.0f} "
              f"ms, the read alone p50 {statistics.median(read) * 1000:.2f} ms")
        result.update(tail_1gb_cli_ms=round(statistics.median(cli) * 1000),
                      tail_1gb_read_ms=round(statistics.median(read) * 1000, 2))
    finally:
        mesh.stop()
    mesh = Mesh(home.root, nodes=3)
    try:
        silent = scale_cpu(mesh, home, args.apps, 0, "quiet")
        talking = scale_cpu(mesh, home, args.apps, 0.1, "talk")
        print(f"{args.apps * 3} workloads: mesh CPU {silent:.1f} % of a core silent, "
              f"{talking:.1f} % writing 10 lines/s each ({talking / silent:.2f}x)")
        result.update(scale_workloads=args.apps * 3, scale_silent_cpu_pct=round(silent, 2),
                      scale_talking_cpu_pct=round(talking, 2),
                      scale_ratio=round(talking / silent, 3))
    finally:
        mesh.stop()
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
