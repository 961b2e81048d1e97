"""The README's quick start and guided tour, run for real, command by command, and checked.

The quick start block's ``pip install`` lines are skipped (the package is installed already)
and so is its ``pytest`` line (this test is part of that run): what remains is
``./examples/quickstart.sh``, which starts the mesh. Every ``bash`` block of the tour then runs
as it is, one command at a time in ``bash -euo pipefail`` (shell variables a command assigns
are carried to the next ones), with two substitutions only: the edge port 8080 becomes a free
port, and the home is a temporary directory (``MYCELIUM_HOME``). The ``pycon`` block's ``>>>``
lines are typed into ``mycelium repl``. ``mycelium`` is this checkout's
(``python -m mycelium``), whatever is installed on ``PATH``.

Every command must exit 0 without a traceback, and the ones the README shows an outcome for
are held to it (:data:`STEPS`): the curl through the edge returns hello's JSON with the version
the README shows, the failed update prints ``exit 1: rolled back…`` *and* 2.0.0 still serves
from the same pids, the log shows the restart the comment promises, and so on. Where the
README relies on a human typing slower than a script (the restart after a kill is logged a few
milliseconds later), the test waits on that condition, with a deadline, before the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", text, re.S | re.M)


def quick_start_commands(readme: str) -> list[str]:
    """The commands of the first block (above every section), without install and test lines."""
    head = readme[:readme.index("<!-- section:")]
    lang, body = _blocks(head)[0]
    assert lang == "bash"
    commands = []
    for line in body.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split("&&")]
        kept = [p for p in parts if not p.startswith("pip install") and "pytest" not in p]
        if kept:
            commands.append(" && ".join(kept))
    return commands


def tour_blocks(readme: str) -> list[tuple[str, str]]:
    """The fenced blocks of the tour section."""
    start = readme.index("<!-- section:tour -->")
    end = readme.index("<!-- /section:tour -->")
    return _blocks(readme[start:end])


def _bare(line: str) -> str:
    """A line without its trailing comment (none of the tour's commands has a ``#`` in it)."""
    return re.sub(r"(^|\s)#.*$", "", line).rstrip()


def shell_commands(body: str) -> list[str]:
    """The logical commands of a bash block: comment lines dropped, ``\\`` lines joined."""
    commands, pending = [], ""
    for line in body.splitlines():
        if not pending and not _bare(line).strip():
            continue
        pending += line + "\n"
        if not _bare(line).endswith("\\"):
            commands.append(pending)
            pending = ""
    assert not pending, f"a block ends inside a command: {pending!r}"
    return commands


def command_key(command: str) -> str:
    """A command as the steps match it: comments gone, whitespace and continuations collapsed."""
    text = " ".join(_bare(line).removesuffix("\\") for line in command.splitlines())
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------- the tour's state


@dataclass
class Tour:
    """The mesh the tour runs against, what the checks remember, and ways to look at it."""

    home: Path
    port: int
    env: dict[str, str]
    seen: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "mycelium", "status", "--json"],
                              cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def app(self, name: str) -> dict[str, Any]:
        apps = [a for a in self.status()["apps"] if a["app"] == name]
        assert apps, f"no app {name} in status"
        return apps[0]

    def get(self, path: str) -> tuple[int, bytes]:
        """One request through the edge."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def records(self) -> list[dict[str, Any]]:
        """The supervision log, as stored."""
        path = self.home / "logs" / "supervision.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def has_record(self, **want: Any) -> bool:
        return any(all(r.get(k) == v for k, v in want.items()) for r in self.records())


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def hello_json(body: str) -> dict[str, Any]:
    """hello's answer to ``GET /``: one JSON object naming the app and its version."""
    doc: dict[str, Any] = json.loads(body)
    assert doc.get("app") == "hello", doc
    return doc


def ready_pids(tour: Tour, app: str) -> dict[str, int]:
    """node → pid of the app's Ready instances."""
    return {i["node"]: i["pid"] for i in tour.app(app)["instances"] if i["state"] == "Ready"}


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class Step:
    """What one README command promises: matched by ``pattern``, in the README's order.

    ``before`` runs first (to wait for what a human would have waited for, or to remember the
    state to compare with); ``check`` gets the finished command's stdout and stderr.
    """

    pattern: str
    check: Callable[[Tour, str, str], None] | None = None
    before: Callable[[Tour], None] | None = None


def _quickstart(tour: Tour, out: str, _err: str) -> None:
    assert "mesh up" in out, out
    answers = [hello_json(line) for line in out.splitlines() if line.startswith('{"app"')]
    assert len(answers) == 3, out  # three requests through the edge
    assert {a["version"] for a in answers} == {"1.0.0"}, answers
    assert len({a["instance"] for a in answers}) >= 2, answers  # round-robin
    assert re.search(r"^hello\s+running\s.*ready 3/3", out, re.M), out
    tour.seen["v1"] = tour.app("hello")["digest"]


def _status(tour: Tour, out: str, _err: str) -> None:
    assert re.search(r"^hello\s+running\s.*ready 3/3", out, re.M), out
    assert len(re.findall(r"^\s+hello@node-\d#\d+\s.*\sReady\s", out, re.M)) == 3, out
    # each node's line may add its capacity in use: "node-1 up (cpu 0.1/2, mem 256/… MB)"
    assert re.search(r"^nodes: node-1 up\b.*, node-2 up\b.*, node-3 up\b", out, re.M), out


def _tree(_tour: Tour, out: str, _err: str) -> None:
    assert out.startswith("mesh"), out
    for part in ("├── fabric", "├── edge", "├── control", "└── nodes", "node-1", "node-2",
                 "node-3", "agent"):
        assert part in out, (part, out)
    assert out.count(" Ready ") == 3, out


def _curl_hello(version: str) -> Callable[[Tour, str, str], None]:
    def check(_tour: Tour, out: str, _err: str) -> None:
        assert hello_json(out)["version"] == version, out
    return check


def _kill(tour: Tour, out: str, _err: str) -> None:
    pids = out.split()
    assert len(pids) == 1 and pids[0].isdigit(), out
    tour.seen["killed"] = int(pids[0])


def _restart_logged(tour: Tour) -> None:
    wait_for(lambda: tour.has_record(event="child_restarted", app="hello",
                                     supervisor="mesh/nodes/node-2/apps/hello"),
             "the supervision log's child_restarted for hello on node-2")


def _logs_tail(tour: Tour, out: str, _err: str) -> None:
    lines = out.splitlines()
    assert len(lines) == 4, out
    events = [line.split()[2] for line in lines]
    assert events == ["child_terminated", "backoff", "started", "child_restarted"], out
    assert 'reason="killed by SIGKILL"' in lines[0], out
    assert f"pid={tour.seen['killed']}" in lines[0], out
    assert re.search(r"delay=\d+\.\d+s", lines[1]), out
    assert lines[3].endswith("restarts=1"), out
    assert all("mesh/nodes/node-2/apps/hello" in line for line in lines), out


def _digest_var(name: str) -> Callable[[Tour, str, str], None]:
    def check(tour: Tour, _out: str, _err: str) -> None:
        value = _shell_var(tour, name)
        assert DIGEST.match(value), (name, value)
        tour.seen[name] = value
    return check


def _deploy_crashy(tour: Tour, out: str, _err: str) -> None:
    assert out.startswith("deployed crashy "), out
    assert tour.app("crashy")["ready"] == 1


def _crash(tour: Tour, out: str, _err: str) -> None:
    assert json.loads(out)["error"], out  # the edge's 502: the upstream died mid-request
    wait_for(lambda: tour.has_record(event="child_terminated", app="crashy",
                                     reason="exit code 3"), "crashy's exit code 3 in the log")
    wait_for(lambda: tour.has_record(event="child_restarted", app="crashy"),
             "crashy's restart in the log")
    wait_for(lambda: tour.app("crashy")["ready"] == 1, "crashy Ready again")


def _chaos(_tour: Tour, out: str, _err: str) -> None:
    found = re.search(r"^chaos: (\d+) kills, (\d+) recoveries, slowest recovery \d+ ms", out,
                      re.M)
    assert found, out
    assert int(found[1]) >= 1 and found[1] == found[2], out


def _deploy_v2(tour: Tour, out: str, _err: str) -> None:
    v2 = tour.seen["v2"]
    assert out.startswith(f"deployed hello {v2[:12]}: 3/3 Ready"), out
    doc = tour.app("hello")
    live = [i for i in doc["instances"] if i["state"] != "Stopped"]
    assert [i["digest"] for i in live] == [v2] * 3, live  # three of 2.0.0, 1.0.0 gone
    assert all(i["state"] == "Ready" for i in live), live


def _remember_blue(tour: Tour) -> None:
    tour.seen["blue"] = ready_pids(tour, "hello")
    assert len(tour.seen["blue"]) == 3


def _rollback(tour: Tour, out: str, err: str) -> None:
    assert out.strip() == "exit 1: rolled back, 2.0.0 still serves", out
    assert "rolled back" in err, err
    doc = tour.app("hello")
    assert doc["digest"] == tour.seen["v2"] and doc["state"] == "failed", doc
    assert doc["plan_status"] == "failed" and doc["reason"], doc
    assert ready_pids(tour, "hello") == tour.seen["blue"], doc  # blue never stopped
    for _ in range(3):  # one request per instance: every one is still 2.0.0
        code, body = tour.get("/hello/")
        assert code == 200 and hello_json(body.decode())["version"] == "2.0.0", body


def _no_wait(tour: Tour, out: str, _err: str) -> None:
    assert re.match(r"deploying slow-start [0-9a-f]{12} \(generation \d+, not waiting\)", out), out


def _slow_status(tour: Tour, out: str, _err: str) -> None:
    assert re.match(r"slow-start\s", out) and "hello" not in out, out
    instance = wait_for(lambda: next((i for i in tour.app("slow-start")["instances"]
                                      if i["state"] == "Ready"), None), "slow-start Ready")
    # Launching for ~3 s (START_DELAY), then Ready
    assert instance["ready_at"] - instance["started_at"] >= 2.9, instance


def _remember_pids(tour: Tour) -> None:
    tour.seen["before_crashes"] = {app: ready_pids(tour, app) for app in ("hello", "crashy")}


def _repl(tour: Tour, out: str, _err: str) -> None:
    assert "'name': 'fabric'" in out, out
    assert "'running'" in out, out
    wait_for(lambda: tour.has_record(event="child_restarted", supervisor="mesh",
                                     child="fabric"), "the fabric's restart in the log")
    wait_for(lambda: tour.has_record(event="child_restarted", supervisor="mesh/nodes/node-1",
                                     child="agent"), "node-1's agent restart in the log")
    after = {app: ready_pids(tour, app) for app in ("hello", "crashy")}
    assert after == tour.seen["before_crashes"], after  # the workloads kept their pids


def _crash_lines(_tour: Tour, out: str, _err: str) -> None:
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert any(re.search(r"\smesh child_terminated fabric\s", line) for line in lines), out
    assert any(re.search(r"\smesh/nodes/node-1 child_terminated agent\s", line)
               for line in lines), out


def _tree_head(_tour: Tour, out: str, _err: str) -> None:
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("mesh"), out
    assert lines[1].startswith("├── fabric") and "restarts 1" in lines[1], out


def _notify_deployed(tour: Tour, out: str, _err: str) -> None:
    assert out.startswith("deployed notify-daemon "), out
    (inst,) = tour.app("notify-daemon")["instances"]
    assert inst["state"] == "Ready" and inst["serving"], inst
    tour.seen["notify_pid"] = inst["pid"]


def _drained(tour: Tour) -> None:  # a human reads the curl's answer first
    wait_for(lambda: tour.app("notify-daemon")["instances"][0]["serving"] is False,
             "notify-daemon out of the routes")


def _not_serving(tour: Tour, out: str, _err: str) -> None:
    assert re.search(r"notify-daemon@\S+\s+node-\d+\s+Ready .*not serving "
                     r"\(http-readiness: HTTP 503\)", out), out
    assert tour.app("notify-daemon")["instances"][0]["pid"] == tour.seen["notify_pid"]


def _serving_again(tour: Tour) -> None:  # the drain lasts 2 s
    wait_for(lambda: tour.app("notify-daemon")["instances"][0]["serving"] is True,
             "notify-daemon back in the routes")


def _hung(_tour: Tour, out: str, _err: str) -> None:
    assert json.loads(out) == {"watchdog_paused_for": 10.0}, out


def _watchdog_restarted(tour: Tour) -> None:
    wait_for(lambda: tour.has_record(event="child_restarted", app="notify-daemon"),
             "notify-daemon restarted by its watchdog")


def _watchdog_logged(tour: Tour, out: str, _err: str) -> None:
    assert int(out.strip()) >= 1, out
    (inst,) = [i for i in tour.app("notify-daemon")["instances"] if i["state"] != "Stopped"]
    assert inst["pid"] != tour.seen["notify_pid"] and inst["restarts"] == 1, inst


def _bad_config(_tour: Tour, out: str, err: str) -> None:
    assert out.strip() == "exit 2", out
    assert err.startswith("error: config: ") and err.count("\n") == 1, err
    assert "MYCELIUM_EDGE_PORT (edge.port) must be an integer 1-65535, got 'x'" in err, err


def _down(tour: Tour, out: str, _err: str) -> None:
    assert out.strip().endswith("is down"), out
    assert not (tour.home / "control.sock").exists()
    assert wait_for(lambda: not _processes_of(tour.home), "no process of the home left",
                    timeout=10)


CURL_HELLO = r"^curl -s http://127\.0\.0\.1:\d+/hello/$"

#: What the README promises, in its order; every step must match a command.
STEPS = [
    Step(r"^\./examples/quickstart\.sh$", _quickstart),
    Step(r"^mycelium status$", _status),
    Step(r"^mycelium tree$", _tree),
    Step(CURL_HELLO, _curl_hello("1.0.0")),
    Step(r"^mycelium kill hello --node node-2$", _kill),
    Step(r"^mycelium logs --app hello \| tail -n 4$", _logs_tail, before=_restart_logged),
    Step(r"^crashy=\$\(mycelium publish ", _digest_var("crashy")),
    Step(r'^mycelium deploy crashy "\$crashy"$', _deploy_crashy),
    Step(r"^curl -s http://127\.0\.0\.1:\d+/crashy/crash; echo$", _crash),
    Step(r"^mycelium chaos --app hello ", _chaos),
    Step(r"^v2=\$\(mycelium publish ", _digest_var("v2")),
    Step(r'^mycelium deploy hello "\$v2" --min 3 --max 3 ', _deploy_v2),
    Step(CURL_HELLO, _curl_hello("2.0.0")),
    Step(r"^bad=\$\(mycelium publish ", _digest_var("bad")),
    Step(r'^mycelium deploy hello "\$bad" .*\|\| echo ', _rollback, before=_remember_blue),
    Step(r"^slow=\$\(mycelium publish ", _digest_var("slow")),
    Step(r'^mycelium deploy slow-start "\$slow" --no-wait$', _no_wait),
    Step(r"^mycelium status slow-start$", _slow_status),
    Step(r"^<pycon>$", _repl, before=_remember_pids),
    Step(r"^mycelium logs \| grep 'crash requested'$", _crash_lines),
    Step(r"^mycelium tree \| head -n 2$", _tree_head),
    Step(r"^nd=\$\(mycelium publish ", _digest_var("nd")),
    Step(r'^mycelium deploy notify-daemon "\$nd"$', _notify_deployed),
    Step(r"^curl -s \"http://127\.0\.0\.1:\d+/notify-daemon/drain\?seconds=2\"; echo$"),
    Step(r"^mycelium status notify-daemon$", _not_serving, before=_drained),
    Step(r"^curl -s \"http://127\.0\.0\.1:\d+/notify-daemon/hang\?seconds=10\"; echo$",
         _hung, before=_serving_again),
    Step(r"^mycelium logs --app notify-daemon \| grep -c 'reason=watchdog_timeout'$",
         _watchdog_logged, before=_watchdog_restarted),
    Step(r"^MYCELIUM_EDGE_PORT=x mycelium up \|\| echo ", _bad_config),
    Step(r"^mycelium down$", _down),
]


def _shell_var(tour: Tour, name: str) -> str:
    state = Path(tour.env["TOUR_STATE"]).read_text()
    found = re.search(rf'^declare -- {name}="([^"]*)"$', state, re.M)
    assert found, (name, state)
    return found[1]


# --------------------------------------------------------------------------- the tests


def test_the_readme_has_a_quick_start_and_a_tour() -> None:
    readme = README.read_text()
    assert quick_start_commands(readme) == ["./examples/quickstart.sh"]
    kinds = [lang for lang, _ in tour_blocks(readme)]
    assert kinds.count("bash") >= 5 and kinds.count("pycon") == 1


def test_the_commands_are_split_as_bash_reads_them() -> None:
    body = "a=$(x \\\n   --y)   # a comment\n# only a comment\n\nb \"$a\" || echo \"exit $?\"\n"
    assert shell_commands(body) == ["a=$(x \\\n   --y)   # a comment\n",
                                    "b \"$a\" || echo \"exit $?\"\n"]
    assert command_key(shell_commands(body)[0]) == "a=$(x --y)"


@pytest.mark.timeout(180)
def test_every_quick_start_and_tour_command_runs_and_shows_what_the_readme_says(
        tmp_path: Path) -> None:
    readme = README.read_text()
    home = tmp_path / "home"
    port = _free_port()
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "mycelium").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mycelium "$@"\n')
    (shim / "mycelium").chmod(0o755)
    state = tmp_path / "shell-state"
    state.write_text("")
    env = {**os.environ, "MYCELIUM_HOME": str(home), "EDGE_PORT": str(port),
           "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
           "TOUR_STATE": str(state),
           "PYTHONPATH": os.pathsep.join(
               p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("MYCELIUM_DEBUG", None)
    tour = Tour(home, port, env)
    steps = list(STEPS)

    def run(command: str, argv: list[str], stdin: str | None = None) -> None:
        key = command_key(command)
        step = steps[0] if steps and re.search(steps[0].pattern, key) else None
        if step is not None:
            steps.pop(0)
            if step.before is not None:
                step.before(tour)
        result = subprocess.run(argv, cwd=REPO, env=env, input=stdin, capture_output=True,
                                text=True, timeout=90, check=False)
        shown = f"{key}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        assert result.returncode == 0, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
        if step is not None and step.check is not None:
            try:
                step.check(tour, result.stdout, result.stderr)
            except (AssertionError, ValueError, KeyError, TypeError) as exc:  # e.g. not JSON
                raise AssertionError(f"{type(exc).__name__}: {exc}\n{shown}") from exc

    try:
        for command in quick_start_commands(readme):
            run(command, ["bash", "-euo", "pipefail", "-c", command])
        for lang, body in tour_blocks(readme):
            if lang == "bash":
                for command in shell_commands(body.replace("8080", str(port))):
                    script = f'source "$TOUR_STATE"\n{command}'
                    assigned = re.match(r"(\w+)=\$\(", command)  # name=$(…): keep name
                    if assigned:
                        script += f'declare -p {assigned[1]} >> "$TOUR_STATE"\n'
                    run(command, ["bash", "-euo", "pipefail", "-c", script])
            elif lang == "pycon":
                typed = [line[4:] for line in body.splitlines() if line.startswith(">>> ")]
                run("<pycon>", [str(shim / "mycelium"), "repl"], stdin="\n".join(typed) + "\n")
        assert not steps, f"README commands the test expected but did not find: {steps[0]}"
        assert not (home / "control.sock").exists(), "the tour ends with `mycelium down`"
    finally:
        _stop_everything(home, env)


def _processes_of(home: Path) -> list[psutil.Process]:
    """Processes started for this home (by command line or ``MYCELIUM_HOME``)."""
    marker, found = str(home), []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if proc.pid != os.getpid() and (
                    any(marker in part for part in proc.info["cmdline"] or ()) or (
                    (proc.info["environ"] or {}).get("MYCELIUM_HOME") == marker)):
                found.append(proc)
    return found


def _stop_everything(home: Path, env: dict[str, str]) -> None:
    """Whatever happened: no mesh and no workload of this home may outlive the test."""
    if (home / "control.sock").exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([sys.executable, "-m", "mycelium", "down"], env=env,
                           capture_output=True, timeout=60, check=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = _processes_of(home)
        if not left:
            return
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(left, timeout=2)
    raise AssertionError(f"processes of {home} survived the test")
