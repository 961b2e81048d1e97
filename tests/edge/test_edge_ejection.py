"""Passive outlier ejection in a real mesh: a SIGSTOPped instance leaves rotation, then returns."""

from __future__ import annotations

import http.client
import json
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from edge_mesh import EdgeMesh, cli, wait_until

from tests.meshkit import stopped_cleanly

CONFIG = """\
[edge]
read_timeout = 1.0
eject_after = 5
eject_time = 2.0
[instance]
health_failures = 1000
"""


def supervision_records(home: Path, event: str) -> list[dict[str, Any]]:
    path = home / "logs" / "supervision.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == event]


class Client:
    """One keep-alive client of the edge that counts its failed requests."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.failed = 0
        self.served: list[str] = []

    def get(self) -> int:
        self.conn.request("GET", "/hello/")
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status == 200:
            self.served.append(json.loads(body)["instance"])
        else:
            self.failed += 1
        return resp.status


@pytest.mark.timeout(180)
def test_a_stopped_instance_is_ejected_within_a_few_requests_and_returns_after_eject_time(
        mesh_home: Path, hello_spores: tuple[Path, dict[str, str]]) -> None:
    (mesh_home / "mycelium.toml").write_text(CONFIG)
    mesh = EdgeMesh(mesh_home, nodes=3)
    with stopped_cleanly(mesh, mesh_home):
        deployed = cli(mesh_home, "deploy", "hello", hello_spores[1]["hello"], "--min", "3",
                       "--max", "3")
        assert deployed.returncode == 0, deployed.stderr
        victim = mesh.ready("hello", 3)[0]
        client = Client(mesh.port)
        wait_until(lambda: client.get() == 200 and set(client.served) >= {
            i["id"] for i in mesh.instances("hello")}, 30, "every instance serving")
        os.kill(victim["pid"], signal.SIGSTOP)
        try:
            for _ in range(60):  # requests until the stopped instance's ejection is logged
                client.get()
                if supervision_records(mesh_home, "endpoint_ejected"):
                    break
            else:
                raise AssertionError(f"no endpoint_ejected record; {client.failed} failed")
            assert client.failed <= 5  # eject_after: then the others carry the load
            (ejected,) = supervision_records(mesh_home, "endpoint_ejected")
            assert (ejected["app"], ejected["instance"]) == ("hello", victim["id"])
            failed = client.failed
            client.served.clear()
            for _ in range(30):
                assert client.get() == 200
            assert client.failed == failed and victim["id"] not in client.served

            def metrics() -> str:
                conn = http.client.HTTPConnection("127.0.0.1", mesh.port, timeout=10)
                try:
                    conn.request("GET", "/_mycelium/metrics")
                    return conn.getresponse().read().decode()
                finally:
                    conn.close()

            line = 'mycelium_edge_ejections_total{app="hello"} 1'  # workers share it every 0.5 s
            wait_until(lambda: line in metrics(), 10, "the ejection counted in the metrics")
        finally:
            os.kill(victim["pid"], signal.SIGCONT)
        (returned,) = wait_until(lambda: supervision_records(mesh_home, "endpoint_returned"),
                                 30, "an endpoint_returned record")
        assert (returned["app"], returned["instance"]) == ("hello", victim["id"])
        out_for = (datetime.fromisoformat(returned["ts"]) -
                   datetime.fromisoformat(ejected["ts"])).total_seconds()
        assert out_for >= 2.0 - 0.01  # eject_time x 1 (timestamps have milliseconds)
        wait_until(lambda: client.get() == 200 and client.served[-1] == victim["id"], 30,
                   "the returned instance serving again")
        assert [i["pid"] for i in mesh.ready("hello", 3)].count(victim["pid"]) == 1
        logs = cli(mesh_home, "logs", "--app", "hello")
        assert "endpoint_ejected" in logs.stdout and "endpoint_returned" in logs.stdout
