"""The CLI's fast path (mycelium/cli/fast.py) answers as the Typer CLI does, byte for byte.

Each case runs the same command line twice as real processes: ``python -m mycelium …`` (the
fast path serves it when it can) and the Typer application alone (``mycelium.cli.full.run``).
Both run under ``-X importtime``, whose lines are taken out of stderr: they tell whether Typer
was imported, i.e. which path served the command.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from mycelium.cli.fast import parse
from mycelium.home import Home
from mycelium.operator.client import ControlClient
from mycelium.spores import keygen, publish
from tests.meshkit import (
    REPO,
    UpProcess,
    free_port,
    kill_leftovers,
    private_home,
    repo_env,
    stopped_cleanly,
)

HELLO = REPO / "examples" / "hello" / "hello"
ENV = repo_env()
ENV.pop("MYCELIUM_HOME", None)
ENV.pop("MYCELIUM_DEBUG", None)
TYPER = "import sys; from mycelium.cli.full import run; run(sys.argv[1:])"
APPS = 4  # x 3 instances


@dataclass(frozen=True)
class Run:
    """What one CLI process did."""

    code: int
    out: bytes
    err: bytes
    modules: frozenset[str]  # what it imported, from -X importtime

    @property
    def typer(self) -> bool:
        """Whether it imported Typer, i.e. the fast path did not serve it."""
        return "typer" in self.modules


def mycelium(*args: str, typer: bool = False, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> Run:
    """Run ``python -m mycelium ARGS`` (or only the Typer application) as a real process."""
    head = ["-c", TYPER] if typer else ["-m", "mycelium"]
    done = subprocess.run([sys.executable, "-X", "importtime", *head, *args],
                          capture_output=True, timeout=60, cwd=cwd or REPO,
                          env={**ENV, **(env or {})}, check=False)
    lines = done.stderr.splitlines(keepends=True)
    imports = [ln for ln in lines if ln.startswith(b"import time:")]
    err = b"".join(ln for ln in lines if not ln.startswith(b"import time:"))
    return Run(done.returncode, done.stdout, err,
               frozenset(ln.split(b"|")[-1].strip().decode() for ln in imports))


def same(*args: str, fast: bool = True, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> Run:
    """Run ``args`` both ways; assert identical exit code, stdout and stderr.

    A live mesh changes between two runs: each instance's ``cpu_percent`` and ``rss_bytes`` are
    sampled every second, and on a loaded machine a health check may restart an instance. So a
    JSON document must be byte for byte what orjson makes of it (what the Typer path prints for
    it) and equal the other path's but for those samples; and a difference is retried twice, so
    only a steady one fails.

    Args:
        fast: whether the fast path must have served it (else the Typer path must have).
    """
    for _attempt in range(3):
        quick = mycelium(*args, cwd=cwd, env=env)
        full = mycelium(*args, typer=True, cwd=cwd, env=env)
        assert full.typer
        assert quick.typer is not fast, f"{args}: served by the {'Typer' if fast else 'fast'} path"
        if ((quick.code, comparable(quick.out), quick.err)
                == (full.code, comparable(full.out), full.err)):
            return quick
    assert (quick.code, quick.out, quick.err) == (full.code, full.out, full.err), args
    return quick


def comparable(out: bytes) -> Any:
    """Standard output with a status document's samples taken out (after checking its bytes)."""
    if not out.startswith(b"{"):
        return out
    doc = orjson.loads(out)
    assert out == orjson.dumps(doc) + b"\n", "not the bytes orjson makes of the document"
    for app in doc["apps"]:
        for inst in app["instances"]:
            inst.pop("cpu_percent", None)
            inst.pop("rss_bytes", None)
    return doc


class Mesh(UpProcess):
    """``mycelium up`` on its own home with ``apps`` apps x 3 instances Ready."""

    def __init__(self, home: Path) -> None:
        self.home = home
        super().__init__([sys.executable, "-m", "mycelium", "up", "--home", str(home),
                          "--edge-port", str(free_port()), "--nodes", "3"], ENV)
        self.wait_line("mesh up", 60.0)
        self.client = ControlClient(Home(home))

    def deploy(self, digests: list[str]) -> None:
        for n, digest in enumerate(digests):
            self.client.request("deploy", app=f"app{n}", digest=digest, min=3, max=3,
                                cpu=0.01, mem=64)
        want = 3 * len(digests)
        deadline = time.monotonic() + 40
        while self.ready() < want:
            assert time.monotonic() < deadline, f"{self.ready()}/{want} Ready after 40s"
            time.sleep(0.05)

    def ready(self) -> int:
        docs: list[dict[str, Any]] = self.client.request("status")["apps"]
        return sum(1 for a in docs for i in a["instances"] if i["state"] == "Ready")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A home with a key and APPS hello spores published."""
    home = Home(tmp_path_factory.mktemp("fast") / "home").ensure()
    keygen(home)
    digests = [publish(home, binary=HELLO, manifest={"name": f"app{n}", "version": "1"})
               for n in range(APPS)]
    return home.root, digests


@pytest.fixture(scope="module")
def mesh(template: tuple[Path, list[str]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A running mesh with APPS apps x 3 instances Ready (shared: the tests only read it)."""
    for home in private_home(template[0], tmp_path_factory.mktemp("shared") / "home"):
        proc = Mesh(home)
        try:
            with stopped_cleanly(proc, home):
                proc.deploy(template[1])
                yield proc
        finally:
            kill_leftovers(home)


@pytest.fixture
def empty_mesh(template: tuple[Path, list[str]], tmp_path: Path) -> Iterator[Mesh]:
    """A running mesh of its own (a copy of the template home) with no app deployed."""
    for home in private_home(template[0], tmp_path / "home"):
        proc = Mesh(home)
        with stopped_cleanly(proc, home):
            yield proc


# --------------------------------------------------------------------------- status


def test_status_json_is_the_typer_paths_bytes_with_many_instances(mesh: Mesh) -> None:
    run = same("status", "--json", "--home", str(mesh.home))
    doc = orjson.loads(run.out)
    assert sum(len(a["instances"]) for a in doc["apps"]) == 3 * APPS
    assert run.out == orjson.dumps(doc) + b"\n"
    assert not run.modules & {"orjson", "click", "rich", "mycelium.home"}, "imported for status"


def test_status_for_humans_is_the_typer_paths_text(mesh: Mesh) -> None:
    run = same("status", "--home", str(mesh.home))
    assert run.out.count(b"\n  app") == 3 * APPS


def test_status_of_one_app_either_way(mesh: Mesh) -> None:
    same("status", "app1", "--json", "--home", str(mesh.home))
    same("status", "--home", str(mesh.home), "app2")


def test_options_in_any_order_and_with_equals(mesh: Mesh) -> None:
    same("status", f"--home={mesh.home}", "--json")
    same("status", "--json", "app0", f"--home={mesh.home}")


def test_the_home_from_the_environment_or_relative_to_the_working_directory(mesh: Mesh) -> None:
    same("status", "--json", env={"MYCELIUM_HOME": str(mesh.home)})
    same("status", "--home", mesh.home.name, cwd=mesh.home.parent)
    same("status", "--home", f"./{mesh.home.name}/", cwd=mesh.home.parent)
    same("status", "--json", cwd=mesh.home.parent,
         env={"MYCELIUM_HOME": f"../{mesh.home.parent.name}/{mesh.home.name}"})


def test_status_with_no_app_at_all(empty_mesh: Mesh) -> None:
    assert same("status", "--json", "--home", str(empty_mesh.home)).out.startswith(b'{"apps":[]')
    assert same("status", "--home", str(empty_mesh.home)).out.startswith(b"nodes: ")


# --------------------------------------------------------------------------- errors


def test_an_unknown_app_is_the_same_bad_input(mesh: Mesh) -> None:
    run = same("status", "nope", "--home", str(mesh.home))
    assert (run.code, run.err) == (2, b"error: no app named 'nope'\n")


def test_no_mesh_is_the_same_one_line_and_exit_1(tmp_path: Path) -> None:
    home = Home(tmp_path / "idle").ensure().root
    for args in (["status"], ["status", "--json"], ["kill", "app0"], ["stop", "app0"]):
        run = same(*args, "--home", str(home))
        assert run.code == 1
        assert run.err == (f"error: no mesh running at {home} (start one with "
                           f"`mycelium up --home {home}`)\n").encode()
    same("status", cwd=tmp_path)  # the default home, ./.mycelium, does not exist
    same("status", "--json", env={"MYCELIUM_HOME": str(tmp_path / "nowhere")})


def test_a_bad_home_fails_as_on_the_typer_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    assert same("status", "--home", str(tmp_path / "file")).code == 1
    assert same("status", "--home", "/" + "x" * 120).code == 1  # too long for a unix socket
    same("status", "--home", "~no-such-user-here/home", fast=False)


def test_a_bad_signal_is_bad_input_before_anything_is_sent(tmp_path: Path) -> None:
    run = same("kill", "app0", "--signal", "NOPE", "--home", str(tmp_path))
    assert (run.code, run.err) == (2, b"error: unknown signal 'NOPE'\n")


# --------------------------------------------------------------------------- kill and stop


def test_kill_prints_the_same_pids(mesh: Mesh) -> None:
    """Signal 0 kills nothing: both paths see the same three workloads."""
    run = same("kill", "app3", "--signal", "0", "--home", str(mesh.home))
    assert len(run.out.splitlines()) == 3
    same("kill", "app3", "--home", str(mesh.home), "--node", "node-1", "--signal=0")
    run = same("kill", "app3", "--signal", "0", "--node", "node-9", "--home", str(mesh.home))
    assert (run.code, run.err) == (1, b"error: no running instance of app3 on node-9\n")


def test_stop_says_the_same(empty_mesh: Mesh, template: tuple[Path, list[str]]) -> None:
    empty_mesh.deploy(template[1][:2])
    quick = mycelium("stop", "app0", "--home", str(empty_mesh.home))
    full = mycelium("stop", "app1", "--home", str(empty_mesh.home), typer=True)
    assert not quick.typer
    assert (quick.code, quick.out, quick.err) == (0, b"stopped app0\n", b"")
    assert (full.code, full.out, full.err) == (0, b"stopped app1\n", b"")
    same("stop", "app0", "--home", str(empty_mesh.home))  # stopped already: at once


# --------------------------------------------------------------------------- deploy

D = "0" * 64


def test_deploy_refuses_bad_input_as_the_typer_path_does(tmp_path: Path) -> None:
    home = str(tmp_path)  # no mesh: the input is checked first, whatever the home
    run = same("deploy", "app0", D, "--min", "3", "--max", "1", "--home", home)
    assert (run.code, run.err) == (2, b"error: --min 3 is greater than --max 1\n")
    assert same("deploy", "Bad_App", D, "--home", home).code == 2
    assert same("deploy", "app0", D, "--timeout", "0", "--home", home).code == 2
    run = same("deploy", "app0", D, "--max", "2", "--no-wait", "--home", home)
    assert run.code == 1 and run.err.startswith(b"error: no mesh running at ")


@pytest.mark.parametrize("odd", [
    ["--min", "-1"], ["--cpu", "1e-1"], ["--min", "x"], ["--min", "1.0"], ["--cpu", ".5"],
    ["--max", "1_0"], ["--warmup", "inf"], ["--wait", "--no-wait"], ["--mem", " 64"],
])
def test_deploy_leaves_odd_numbers_and_flags_to_typer(odd: list[str], tmp_path: Path) -> None:
    same("deploy", "app0", D, *odd, "--home", str(tmp_path), fast=False)


def test_deploy_publishes_and_follows_as_the_typer_path_does(
        empty_mesh: Mesh, template: tuple[Path, list[str]]) -> None:
    """The same lines for app0 (fast) and app1 (Typer) but for the names and the time taken."""
    runs = {}
    for n, typer in ((0, False), (1, True)):
        runs[n] = mycelium("deploy", f"app{n}", template[1][n], "--min", "3", "--max", "3",
                           "--cpu", "0.01", "--mem", "64", "--home", str(empty_mesh.home),
                           typer=typer)
        assert runs[n].typer is typer and runs[n].code == 0, runs[n].err

    def lines(run: Run, n: int) -> tuple[list[str], list[str]]:
        """stdout, and stderr's lines sorted without the counts seen on the way (timing)."""
        out = re.sub(r"in [0-9.]+s", "in Ts", run.out.decode().replace(template[1][n][:12], "D"))
        err = [ln.replace(f"app{n}", "APP") for ln in run.err.decode().splitlines()]
        return out.replace(f"app{n}", "APP").splitlines(), sorted(
            ln for ln in err if not re.fullmatch(r"APP: [1-9]\d*/3 Ready \(starting\)", ln))

    assert lines(runs[0], 0) == lines(runs[1], 1)
    assert lines(runs[0], 0)[0] == ["deployed APP D: 3/3 Ready in Ts"]
    quick = mycelium("deploy", "app0", template[1][0], "--no-wait", "--max=3", "--cpu=0.01",
                     "--mem=64", "--home", str(empty_mesh.home))
    assert not quick.typer and quick.code == 0
    assert re.fullmatch(rb"deploying app0 [0-9a-f]{12} \(generation \d+, not waiting\)\n",
                        quick.out)


# --------------------------------------------------------------------------- what stays Typer's


@pytest.mark.parametrize("args", [
    ["--help"], ["status", "--help"], ["status", "--jsn"],
    ["status", "a", "b"], ["status", "--json", "--json"], ["status", "--home"],
    ["status", "--home", ""], ["kill"], ["stop", "--home", "x"], ["status", "--", "x"],
    ["tree"], [],
])
def test_everything_else_is_the_typer_cli(args: list[str], tmp_path: Path) -> None:
    same(*args, fast=False, cwd=tmp_path)


def test_debug_is_the_typer_cli(mesh: Mesh, tmp_path: Path) -> None:
    same("status", "--json", "--debug", "--home", str(mesh.home), fast=False)
    same("status", "--home", str(mesh.home), fast=False, env={"MYCELIUM_DEBUG": "1"})
    run = mycelium("status", "--home", str(tmp_path), env={"MYCELIUM_DEBUG": "1"})
    assert run.typer and run.code == 1 and b"Traceback" in run.err


def test_a_closed_pipe_exits_as_click_does(mesh: Mesh) -> None:
    """The reader goes away before the (large) output is written: exit 1, no traceback."""
    codes = []
    for head in (["-m", "mycelium"], ["-c", TYPER]):
        proc = subprocess.Popen([sys.executable, *head, "status", "--home", str(mesh.home)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        codes.append((proc.wait(30), proc.stderr.read()))
        proc.stderr.close()
    assert codes[0] == codes[1]


def test_the_console_script_shape_is_served_fast(mesh: Mesh) -> None:
    """``mycelium.cli:main`` itself (what the console script calls) with a given argv."""
    code = ("import sys; from mycelium.cli import main; main(sys.argv[1:])")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, "status", "--json",
                           "--home", str(mesh.home)], capture_output=True, timeout=60, env=ENV,
                          check=False)
    assert done.returncode == 0
    assert not any(ln.split(b"|")[-1].strip() == b"typer" for ln in done.stderr.splitlines())
    # the same document both ways; live samples (cpu, load) may move between the two reads
    assert _without_samples(done.stdout) == _without_samples(
        mycelium("status", "--json", "--home", str(mesh.home)).out)


def _without_samples(out: bytes) -> object:
    """The status document less the values sampled anew on every read."""
    doc = orjson.loads(out)
    for app in doc.get("apps", []):
        app.pop("in_flight", None)
        for inst in app.get("instances", []):
            for key in ("cpu_percent", "rss_bytes", "last_check"):
                inst.pop(key, None)
    return doc


# --------------------------------------------------------------------------- the parser alone


@pytest.mark.parametrize(("args", "parsed"), [
    (["status"], ("status", [], {})),
    (["status", "a", "--json", "--home=h"], ("status", ["a"], {"--json": True, "--home": "h"})),
    (["kill", "--signal", "TERM", "a"], ("kill", ["a"], {"--signal": "TERM"})),
    (["stop", "a", "--home", "h"], ("stop", ["a"], {"--home": "h"})),
    (["status", "--json=1"], None), (["status", "-h"], None), (["status", "--home", "-x"], None),
    (["stop"], None), (["stop", "a", "b"], None),
    (["deploy", "a", "b", "--no-wait", "--min=2"], ("deploy", ["a", "b"],
                                                    {"--no-wait": True, "--min": "2"})),
    (["deploy", "a"], None), (["deploy", "a", "b", "--wait=1"], None),
    (["kill", "a", "--node", "n", "--node", "m"], None), (["status", "--home="], None),
    (["secret", "set", "a", "B", "--no-wait", "--timeout=5"],
     ("secret set", ["a", "B"], {"--no-wait": True, "--timeout": "5"})),
    (["secret", "set", "a"], None), (["secret", "rm", "a", "B"], None),
    (["secret", "list", "a"], None), (["secret set", "a", "B"], None),
])
def test_the_parser_takes_only_the_plain_shapes(
        args: list[str], parsed: tuple[str, list[str], dict[str, str | bool]] | None) -> None:
    assert parse(args) == parsed
