"""The parts of the check engine on real sockets and processes: the prober's http and tcp
checks, exec checks (timeouts kill their whole group; at most ``exec_checks_parallel`` at once)
and the notify socket (only the workload's datagrams count; a flood delays nobody else)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from mycelium.node.checks import CheckEngine, CheckReport, run_exec
from mycelium.node.notify import Notice, NotifySocket, parse_notice
from mycelium.node.prober import shared_prober
from mycelium.spores.checks import CheckSpec


def wait_for(predicate, timeout: float = 10.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        code = int(self.path.strip("/") or "200")
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def check(kind: str, url: str, timeout: float = 2.0) -> tuple[bool, str]:
    done = threading.Event()
    out: list[tuple[bool, str]] = []

    def answer(ok: bool, detail: str) -> None:
        out.append((ok, detail))
        done.set()

    shared_prober().check(kind, url, timeout, answer)
    assert done.wait(timeout + 5)
    return out[0]


def test_http_checks_pass_on_2xx_and_3xx_and_say_what_they_saw(server: str) -> None:
    assert check("http", f"{server}/204") == (True, "HTTP 204")
    assert check("http", f"{server}/302") == (True, "HTTP 302")
    assert check("http", f"{server}/503") == (False, "HTTP 503")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert check("http", f"http://127.0.0.1:{port}/") == (False, "connect refused")
    assert check("tcp", f"http://127.0.0.1:{port}/") == (False, "connect refused")
    assert check("tcp", f"{server}/") == (True, "connected")


def test_an_http_check_that_gets_no_answer_times_out() -> None:
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        assert check("http", f"http://127.0.0.1:{mute.getsockname()[1]}/", 0.2) == (
            False, "timeout after 0.2s")


def test_exec_checks_run_in_the_directory_with_the_environment(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "FOO": "bar"}
    assert run_exec(["/bin/sh", "-c", "echo $FOO; pwd"], tmp_path, env, 5.0) == (
        True, "exit code 0: bar")
    ok, detail = run_exec(["/bin/sh", "-c", "pwd; exit 4"], tmp_path, env, 5.0)
    assert not ok and detail == f"exit code 4: {tmp_path}"
    ok, detail = run_exec(["./nothing-here"], tmp_path, env, 5.0)
    assert not ok and detail.startswith("cannot run ./nothing-here")


def test_an_exec_check_is_killed_at_its_timeout_with_its_whole_group(tmp_path: Path) -> None:
    script = "echo $$ > group; sleep 30 & sleep 30"
    ok, detail = run_exec(["/bin/sh", "-c", script], tmp_path, dict(os.environ), 0.3)
    assert (ok, detail) == (False, "timeout after 0.3s (killed)")
    group = int((tmp_path / "group").read_text())

    def gone() -> bool:
        return not [p for p in psutil.process_iter(["status"])
                    if p.info["status"] != psutil.STATUS_ZOMBIE and _pgid(p.pid) == group]

    wait_for(gone, 10, "the check's process group to be gone")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_at_most_exec_checks_parallel_run_at_once_on_a_node(tmp_path: Path) -> None:
    script = "echo start >> log; sleep 0.2; echo end >> log"
    checks = tuple(CheckSpec(type="exec", role="readiness", name=f"e{i}", interval=0.01,
                             timeout=5.0, failures=1, successes=1,
                             command=("/bin/sh", "-c", script)) for i in range(4))
    reports: list[CheckReport] = []
    engine = CheckEngine(checks, health="/health", directory=tmp_path, node="parallel-test",
                         exec_parallel=2, startup_timeout=30.0, report=reports.append)
    engine.start(os.getpid(), os.getpgid(0), "http://127.0.0.1:9", dict(os.environ), tmp_path)
    try:
        wait_for(lambda: any(r.ready for r in reports), 20, "Ready from four exec checks")
    finally:
        engine.close()
    running = peak = 0
    for line in (tmp_path / "log").read_text().split():
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    assert peak == 2


class _Counting(_Handler):
    seen = 0

    def do_GET(self) -> None:
        type(self).seen += 1
        super().do_GET()


def test_checks_taking_turns_with_unchanged_outcomes_are_not_reported(tmp_path: Path) -> None:
    """Reports cost the instance an actor turn each: an http and a tcp check passing over and
    over must not make every result one (only Ready and each check's first outcome are news)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    fast = {"interval": 0.02, "timeout": 2.0, "failures": 3, "successes": 1}
    checks = (CheckSpec(type="http", role="readiness", name="web", path="/200", **fast),
              CheckSpec(type="tcp", role="liveness", name="port", **fast))
    reports: list[CheckReport] = []
    engine = CheckEngine(checks, health="/health", directory=tmp_path, node="turns-test",
                         exec_parallel=1, startup_timeout=30.0, report=reports.append)
    engine.start(os.getpid(), os.getpgid(0), f"http://127.0.0.1:{httpd.server_address[1]}",
                 dict(os.environ), tmp_path)
    try:
        wait_for(lambda: any(r.ready for r in reports), 20, "Ready")
        seen = _Counting.seen
        wait_for(lambda: _Counting.seen >= seen + 30, 30, "30 more http checks")
    finally:
        engine.close()
        httpd.shutdown()
        httpd.server_close()
    assert len(reports) <= 3, [(r.ready, r.last) for r in reports]
    assert reports[-1].ready and reports[-1].serving and reports[-1].failure is None


def test_sd_notify_datagrams_are_parsed_and_merged() -> None:
    n = parse_notice(b"READY=1\nSTATUS=Serving 3 clients\nbogus\nWATCHDOG=trigger")
    assert n == Notice(ready=True, status="Serving 3 clients")
    merged = n.merge(parse_notice(b"WATCHDOG=1\nSTOPPING=1\nSTATUS=bye"))
    assert merged == Notice(ready=True, status="bye", watchdog=True, stopping=True)


SPEAKER = """
import os, socket, subprocess, sys
address = sys.argv[1]
for line in sys.stdin:
    line = line.strip()
    if line.startswith("child:"):
        subprocess.run([sys.executable, "-c", "import socket, sys; socket.socket(socket.AF_UNIX,"
                        " socket.SOCK_DGRAM).sendto(sys.argv[2].encode(), sys.argv[1])",
                        address, line[6:]])
    else:
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(line.encode(), address)
    print("sent", flush=True)
"""


class _Collector:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.statuses: list[str] = []
        self.ready = False

    def __call__(self, notice: Notice) -> None:
        with self.cond:
            if notice.status is not None:
                self.statuses.append(notice.status)
            self.ready = self.ready or notice.ready
            self.cond.notify_all()

    def wait_status(self, status: str, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: status in self.statuses, timeout), self.statuses


def test_only_the_workload_and_its_descendants_are_heard(tmp_path: Path) -> None:
    heard = _Collector()
    ns = NotifySocket(tmp_path, heard)
    assert ns.address == str(tmp_path / "notify.sock")
    assert (tmp_path / "notify.sock").stat().st_mode & 0o777 == 0o600
    address = ns.address
    workload = subprocess.Popen([sys.executable, "-c", SPEAKER, address], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                start_new_session=True)
    assert workload.stdin is not None and workload.stdout is not None
    try:
        workload.stdin.write("STATUS=before allow\n")
        workload.stdin.flush()
        workload.stdout.readline()
        ns.allow(workload.pid, workload.pid)
        heard.wait_status("before allow")  # kept until the workload was known
        subprocess.run([sys.executable, "-c", SPEAKER, address], input="READY=1\nSTATUS=intruder\n",
                       text=True, capture_output=True, check=True, start_new_session=True)
        for line in ("child:STATUS=from a child", "STATUS=after"):
            workload.stdin.write(line + "\n")
            workload.stdin.flush()
            workload.stdout.readline()
        heard.wait_status("after")
        heard.wait_status("from a child")
        assert "intruder" not in heard.statuses and not heard.ready
    finally:
        workload.kill()
        workload.wait()
        ns.close()
    assert not (tmp_path / "notify.sock").exists()


FLOODER = """
import socket, sys, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.setblocking(False)
end = time.monotonic() + float(sys.argv[2])
i = 0
print("flooding", flush=True)
while time.monotonic() < end:
    t = time.monotonic()
    for _ in range(100):
        i += 1
        try:
            sock.sendto(b"STATUS=flood %d" % i, sys.argv[1])
        except OSError:
            pass
    time.sleep(max(0.0, 0.01 - (time.monotonic() - t)))
"""


def test_a_flood_of_datagrams_from_one_workload_delays_no_other(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    flooded, quiet = _Collector(), _Collector()
    a, b = NotifySocket(tmp_path / "a", flooded), NotifySocket(tmp_path / "b", quiet)
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, a.address, "30"], text=True,
                               stdout=subprocess.PIPE)
    assert flooder.stdout is not None
    try:
        a.allow(flooder.pid, os.getpgid(flooder.pid))
        b.allow(os.getpid(), os.getpgid(0))
        flooder.stdout.readline()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            wait_for(lambda: len(flooded.statuses) > 10, 10, "the flood to be heard")
            for k in range(20):
                sender.sendto(f"STATUS=quiet {k}".encode(), b.address)
                quiet.wait_status(f"quiet {k}")
        assert flooder.poll() is None  # still flooding while the other one was heard
    finally:
        flooder.kill()
        flooder.wait()
        a.close()
        b.close()
