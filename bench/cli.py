"""Benchmark: how fast ``mycelium status --json`` starts and answers, against ``python -c pass``.

One command:

    python bench/cli.py [--apps 100] [--runs 20] [--settle 30]

Starts a real mesh (``mycelium up``, 3 nodes), deploys ``--apps`` apps x 3 instances of
examples/hello through the control socket, waits until all are Ready and ``--settle`` seconds
more (the burst of starts is over), then times ``--runs`` runs each (interleaved in a shuffled
order, wall clock, output to a pipe) of:

- the anchor: ``python -c pass`` (interpreter start and site, nothing of ours);
- a minimal status client (``python -c``: socket, send, json decode and print; no argument
  parsing, home resolution or error handling): the floor for any Python CLI here;
- ``python -m mycelium status --json`` (the fast path, :mod:`mycelium.cli.fast`);
- the installed console script ``mycelium status --json`` (next to ``sys.executable``: the
  real entry point, not a pyenv shim);
- the full Typer path on the same command line, for reference;
- the status request alone over the control socket, from the bench's process (no start-up):
  what the mesh itself takes to answer, which every CLI run pays on top of the anchor.

``python`` is ``sys.executable`` (a pyenv shim adds ~100 ms of bash to every run). Every
output must be the bytes orjson makes of its document (what the Typer path prints), and in
each round the fast and Typer documents are compared without each instance's ``cpu_percent``
and ``rss_bytes`` (sampled every second, so they move between two runs). Prints wall-clock and
CPU (user + system of each process) medians, ratios to the anchor and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import free_port  # noqa: E402
from mycelium.home import Home  # noqa: E402
from mycelium.operator.client import ControlClient  # noqa: E402
from mycelium.spores import keygen, publish  # noqa: E402

HELLO = REPO / "examples" / "hello" / "hello"
ENV = {**{k: v for k, v in os.environ.items() if k not in ("MYCELIUM_HOME", "MYCELIUM_DEBUG")},
       "PYTHONPATH": str(REPO)}
TYPER = "import sys; from mycelium.cli.full import run; run(sys.argv[1:])"
# The least any Python status client does: connect, ask, decode, print (a naive peer's CLI at
# its leanest, with no argument parsing, home resolution or error handling).
MINIMAL = ("import json, socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
           "s.sendall(b'{\"op\":\"status\",\"app\":null}\\n'); "
           "print(json.dumps(json.loads(s.makefile('rb').readline())['result']))")


def up(home: Path) -> subprocess.Popen[str]:
    """``mycelium up`` in the background, returned once it says it is up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mycelium", "up", "--home", str(home), "--edge-port",
         str(free_port()), "--nodes", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "mesh up" in line:
            # keep reading its log: a full pipe would block the mesh's writes (and its shutdown)
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
    raise SystemExit("the mesh did not come up")


def wait(predicate: Any, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s")
        time.sleep(interval)


def run(argv: list[str]) -> tuple[float, float, bytes]:
    """Wall seconds, CPU seconds (user + system, from wait4) and stdout of one run."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited {proc.returncode}")
    return took, usage.ru_utime + usage.ru_stime, out


def comparable(out: bytes) -> bytes:
    """A status document without its per-second samples, after checking that ``out`` is what
    orjson makes of it (so what the Typer path prints for it).

    Raises:
        SystemExit: ``out`` is not orjson's bytes for its own document.
    """
    doc = orjson.loads(out)
    if out != orjson.dumps(doc) + b"\n":
        raise SystemExit("`status --json` printed other bytes than orjson's for its document")
    for app in doc["apps"]:
        for inst in app["instances"]:
            inst.pop("cpu_percent", None)
            inst.pop("rss_bytes", None)
    return bytes(orjson.dumps(doc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds to wait once all are Ready (300 starts load 2 cores)")
    args = parser.parse_args()

    script = shutil.which("mycelium", path=str(Path(sys.executable).parent))
    tmp = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    home = Home(tmp / "home").ensure()
    keygen(home)
    digests = [publish(home, binary=HELLO, manifest={"name": f"app{n}", "version": "1"})
               for n in range(args.apps)]
    mesh = up(home.root)
    client = ControlClient(home)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "commit": commit,
                              "python": sys.executable, "apps": args.apps, "runs": args.runs}
    try:
        for n, digest in enumerate(digests):
            client.request("deploy", app=f"app{n}", digest=digest, min=3, max=3,
                           cpu=0.01, mem=64)
        want = args.apps * 3

        def all_ready() -> bool:
            docs = client.request("status")["apps"]
            return sum(1 for a in docs for i in a["instances"] if i["state"] == "Ready") == want

        wait(all_ready, 300)
        time.sleep(args.settle)
        status = ["status", "--json", "--home", str(home.root)]
        commands = {"anchor": [sys.executable, "-c", "pass"],
                    "minimal": [sys.executable, "-c", MINIMAL, str(home.control_socket)],
                    "python_m": [sys.executable, "-m", "mycelium", *status],
                    "typer": [sys.executable, "-c", TYPER, *status]}
        if script is not None:
            commands["script"] = [script, *status]
        result["load_at_start"] = round(os.getloadavg()[0], 2)
        times: dict[str, list[float]] = {name: [] for name in commands}
        times["socket"] = []  # the status request alone, from this process: no start-up
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        same = 0  # rounds in which every status command printed the same bytes
        order = list(commands)
        shuffle = random.Random(1)
        for _ in range(args.runs):  # interleaved: a burst of load hits every command alike
            shuffle.shuffle(order)
            outputs: dict[str, bytes] = {}
            for name in order:
                took, used, outputs[name] = run(commands[name])
                times[name].append(took)
                cpu[name].append(used)
            t = time.perf_counter()
            client.exchange(b'{"op":"status","app":null}')
            times["socket"].append(time.perf_counter() - t)
            same += len({comparable(out) for name, out in outputs.items()
                         if name not in ("anchor", "minimal")}) == 1
        result["load_at_end"] = round(os.getloadavg()[0], 2)
        size = len(outputs["python_m"])
        anchor = statistics.median(times["anchor"])
        print(f"{want} instances Ready; `status --json` is {size} bytes; every output is what "
              f"orjson makes of its document; fast and Typer paths printed the same document "
              f"(but for the 1 s cpu/rss samples) in {same}/{args.runs} rounds")
        anchor_cpu = statistics.median(cpu["anchor"])
        print("wall clock (median, min, median / the anchor's); CPU of the process (user + "
              "system, median, / the anchor's: steadier on a loaded machine)")
        for name, values in times.items():
            med = statistics.median(values)
            line = (f"  {name:<9} wall {med * 1000:6.1f} ms  min {min(values) * 1000:6.1f} ms"
                    f"  x{med / anchor:.2f}")
            result[f"{name}_ms"] = round(med * 1000, 1)
            result[f"{name}_ratio"] = round(med / anchor, 2)
            if name in cpu:
                used = statistics.median(cpu[name])
                line += f"   cpu {used * 1000:6.1f} ms  x{used / anchor_cpu:.2f}"
                result[f"{name}_cpu_ms"] = round(used * 1000, 1)
                result[f"{name}_cpu_ratio"] = round(used / anchor_cpu, 2)
            print(line)
        result.update(status_bytes=size, same_output_rounds=same)
    finally:
        mesh.send_signal(signal.SIGTERM)
        mesh.wait(120)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
