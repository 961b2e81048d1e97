"""Where a mesh shows what it knows, a secret's value is never among it: the dashboard's API
and its live events, the access log, the REPL's answers (message reprs), the CLI's views, the
home's files and every command line — with a workload that prints its secret and crashes."""

from __future__ import annotations

import contextlib
import http.client
import sys
from pathlib import Path

import pytest
from mesh_helpers import ENV, MeshProcess, cli, wait_until
from test_secrets_mesh import VALUE, fetch_path, no_value_leaked, set_value

from mycelium.home import Home
from mycelium.messages import GetInfo, GetPlans, GetStatus
from mycelium.operator.control import ControlClient
from tests.meshkit import UpProcess, free_port, stopped_cleanly


class DashboardMesh(MeshProcess):
    """``mycelium up`` with the dashboard on its own port and the access log on."""

    def __init__(self, home: Path) -> None:
        self.home, self.port, self.ui_port = home, free_port(), free_port()
        (home / "mycelium.toml").write_text("[edge]\naccess_log = true\n")
        UpProcess.__init__(self, [
            sys.executable, "-m", "mycelium", "up", "--home", str(home), "--edge-port",
            str(self.port), "--nodes", "2", "--ui-port", str(self.ui_port)], ENV)
        self.client = ControlClient(Home(home))
        self.wait_line("mesh up", 60.0)

    def ui(self, path: str) -> str:
        """GET ``path`` from the dashboard."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ui_port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200, (path, resp.status)
            return resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def first_events(self) -> str:
        """The live event stream's first events, up to its first ``state`` event's data."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ui_port, timeout=10)
        try:
            conn.request("GET", "/api/events")
            resp = conn.getresponse()
            lines: list[str] = []
            while not (len(lines) > 1 and lines[-2] == "event: state"):
                line = resp.readline()
                assert line, "the event stream ended"
                lines.append(line.decode("utf-8", "replace").rstrip("\n"))
            return "\n".join(lines)
        finally:
            conn.close()


@pytest.mark.timeout(180)
def test_the_dashboard_access_log_and_repl_answers_never_show_a_value(
        home: Path, digests: dict[str, str]) -> None:
    set_value(home, "plain")
    mesh = DashboardMesh(home)
    with stopped_cleanly(mesh, home):
        assert cli(home, "deploy", "plain", digests["plain"], "--max", "2").returncode == 0
        first = {i["id"] for i in mesh.ready("plain", 2)}
        for _ in range(2):  # each instance prints its secret (it keeps running) ...
            fetch_path(mesh.port, "/plain/print")
        with contextlib.suppress(OSError):  # ... and prints it again and dies (the edge may
            # retry the GET on the other instance: one or both are replaced)
            fetch_path(mesh.port, "/plain/crash")
        wait_until(lambda: {i["id"] for i in mesh.ready("plain", 2)} - first, 30,
                   "the crashed instance replaced")
        hidden = "connecting with password <secret DB_PASSWORD>"
        state = wait_until(lambda: hidden in (s := mesh.ui("/api/state")) and s, 30,
                           "the dashboard's output lines, redacted")
        views = {"dashboard state": state, "dashboard log": mesh.ui("/api/log"),
                 "dashboard events": mesh.first_events(),
                 "dashboard page": mesh.ui("/"),
                 "tree": cli(home, "tree").stdout, "logs": cli(home, "logs").stdout,
                 "status": cli(home, "status", "plain").stdout}
        for name in ("fabric", "edge", "node-1", "node-2"):  # what the REPL's handles answer
            views[f"repl {name}"] = repr(mesh.client.ask(name, GetInfo()))
        views["repl status"] = repr(mesh.client.ask("fabric", GetStatus()))
        views["repl plans"] = repr(mesh.client.ask("fabric", GetPlans()))
        assert hidden in views["logs"]  # the crash's tail is there, the value is not
        assert not [name for name, text in views.items() if VALUE in text], "a view shows it"
        wait_until(lambda: (home / "logs" / "access.jsonl").exists(), 10, "the access log")
        no_value_leaked(mesh, VALUE)  # the home's files (access log included), command lines
