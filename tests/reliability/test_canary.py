"""Canaries at the edge, promote, automatic revert, history and rollback, on a real mesh.

A real ``mycelium up`` with three nodes, real workloads and a steady load through the edge:
a canary start, a promote and a rollback fail no request; a canary answering 500 is reverted by
itself and its history says so.
"""

from __future__ import annotations

import json

import pytest
from load import Load
from mesh_helpers import MeshProcess, cli, wait_until


def _history(mesh: MeshProcess) -> list[dict[str, object]]:
    result = cli(mesh.home, "history", "web", "--json")
    assert result.returncode == 0, result.stderr
    records: list[dict[str, object]] = json.loads(result.stdout)
    return records


@pytest.mark.timeout(240)
def test_a_canary_takes_its_share_then_promote_and_rollback_fail_no_request(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    v1, v2 = digests["v1"], digests["v2"]
    assert cli(mesh.home, "deploy", "web", v1, "--min", "3", "--max", "3").returncode == 0
    mesh.ready("web", 3, v1)
    with Load(mesh.port, "web", threads=3) as load:
        load.wait_requests(30)
        result = cli(mesh.home, "deploy", "web", v2, "--min", "3", "--max", "3",
                     "--canary", "1", "--canary-weight", "30", timeout=90)
        assert result.returncode == 0, result.stderr
        assert "canary of web" in result.stdout
        doc = mesh.app("web")
        assert doc["state"] == "canary"
        canary = doc["canary"]
        assert (canary["digest"], canary["old"]["digest"]) == (v2, v1)
        assert canary["count"] == 1 and canary["ready"] == 1 and canary["weight"] == 30
        before = dict(load.stats.versions)
        load.wait_requests(600)
        after = load.stats.versions
        new = after["2"] - before.get("2", 0)
        total = sum(after.values()) - sum(before.values())
        assert 0.22 <= new / total <= 0.38, (new, total)  # 30 % of the requests, roughly
        wait_until(lambda: mesh.app("web")["canary"]["answered"] >= 20, 10.0,
                   "the edge's counts reach the fabric")
        assert mesh.app("web")["canary"]["error_rate"] == 0
        result = cli(mesh.home, "promote", "web")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: mesh.app("web")["state"] == "running"
                   and {i["digest"] for i in mesh.app("web")["instances"]} == {v2}, 60.0,
                   "the promoted rollout done")
        assert mesh.app("web")["generation"] == json.loads(
            cli(mesh.home, "history", "web", "--json").stdout)[-1]["generation"]
        result = cli(mesh.home, "rollback", "web", timeout=90)
        assert result.returncode == 0, result.stderr
        assert {i["digest"] for i in mesh.app("web")["instances"]} == {v1}
        load.wait_requests(30)
    assert load.stats.failed == 0, load.stats.errors
    records = _history(mesh)
    assert [(r["digest"], r["outcome"]) for r in records] == [
        (v1, "superseded"), (v2, "superseded"), (v1, "running")]
    assert all(str(r["who"]).count("@") == 1 and r["version"] for r in records)
    assert all(str(r["at"]).endswith("Z") for r in records)
    result = cli(mesh.home, "promote", "web")
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert result.stderr.startswith("error: ")


@pytest.mark.timeout(180)
def test_a_canary_answering_500_is_reverted_by_itself(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    v1, erring = digests["v1"], digests["erring"]
    assert cli(mesh.home, "deploy", "web", v1, "--min", "2", "--max", "2").returncode == 0
    olds = {i["pid"] for i in mesh.ready("web", 2, v1)}
    with Load(mesh.port, "web", threads=2) as load:
        load.wait_requests(20)
        result = cli(mesh.home, "deploy", "web", erring, "--min", "2", "--max", "2",
                     "--canary", "1", timeout=90)
        assert result.returncode == 0, result.stderr
        doc = wait_until(lambda: (d := mesh.app("web"))["state"] == "failed" and d, 30.0,
                         "the canary reverted")
        assert "5xx rate" in str(doc["reason"]), doc
        wait_until(lambda: {i["digest"] for i in mesh.app("web")["instances"]} == {v1}, 5.0,
                   "the canary gone")
        ok_before = load.stats.ok
        load.wait_requests(50)
        assert load.stats.ok - ok_before >= 50 - 1  # the old instances take every request
    assert {i["pid"] for i in mesh.app("web")["instances"]} == olds
    records = _history(mesh)
    assert records[-1]["digest"] == erring
    assert str(records[-1]["outcome"]).startswith("rolled back: canary 5xx rate")
    assert (records[0]["digest"], records[0]["outcome"]) == (v1, "running")


@pytest.mark.timeout(120)
def test_bad_canary_input_changes_nothing(mesh: MeshProcess, digests: dict[str, str]) -> None:
    v1, v2 = digests["v1"], digests["v2"]
    assert cli(mesh.home, "deploy", "web", v1).returncode == 0
    generation = mesh.app("web")["generation"]
    for args, code in [(("deploy", "web", v2, "--canary", "0"), 2),
                       (("deploy", "web", v2, "--canary", "1", "--canary-weight", "100"), 2),
                       (("deploy", "web", v2, "--canary", "1", "--canary-weight", "0"), 2),
                       (("deploy", "web", v2, "--canary", "2"), 2),  # one node runs web
                       (("deploy", "web", v1, "--canary", "1"), 2),  # the same digest
                       (("promote", "web"), 2),
                       (("rollback", "web"), 1),
                       (("rollback", "web", "--to", "99"), 2)]:
        result = cli(mesh.home, *args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (
            args, result.stderr)
    assert mesh.app("web")["generation"] == generation
    assert [r["outcome"] for r in _history(mesh)] == ["running"]


@pytest.mark.timeout(150)
def test_auto_promote_finishes_a_passing_canary_and_a_failing_one_is_rolled_back(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    v1, v2, bad = digests["v1"], digests["v2"], digests["bad"]
    assert cli(mesh.home, "deploy", "web", v1, "--min", "2", "--max", "2").returncode == 0
    mesh.ready("web", 2, v1)
    result = cli(mesh.home, "deploy", "web", bad, "--min", "2", "--max", "2", "--canary", "1",
                 "--timeout", "3", timeout=60)
    assert result.returncode == 1, result.stderr  # never Ready: the canary failed
    assert mesh.app("web")["state"] == "failed"
    assert str(_history(mesh)[-1]["outcome"]).startswith("rolled back: rollout of ")
    result = cli(mesh.home, "deploy", "web", v2, "--min", "2", "--max", "2", "--canary", "1",
                 "--auto-promote", "1", timeout=60)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: mesh.app("web")["state"] == "running"
               and {i["digest"] for i in mesh.app("web")["instances"]} == {v2}, 60.0,
               "promoted by itself")
    outcomes = [str(r["outcome"]) for r in _history(mesh)]
    assert outcomes[0] == "superseded" and outcomes[2] == "running", outcomes
    assert outcomes[1].startswith("rolled back: "), outcomes
