"""The dashboard's pure parts: where it may bind, the page model, the rates (fake clock)."""

from __future__ import annotations

import pytest

from mycelium.errors import BadInput
from mycelium.operator.dashboard import (
    Counts,
    DashboardConfig,
    LogIndex,
    RateHistory,
    UnsafeBind,
    build_view,
    check_bind,
    is_loopback,
    parse_requests,
)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert is_loopback(host)
    assert check_bind(DashboardConfig(port=9000, host=host)).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org", "10.0.0.1"])
def test_other_hosts_are_refused_unless_allowed(host: str) -> None:
    with pytest.raises(UnsafeBind, match="allow_remote") as err:
        check_bind(DashboardConfig(port=9000, host=host))
    assert isinstance(err.value, BadInput) and err.value.exit_code == 2
    assert check_bind(DashboardConfig(port=9000, host=host, allow_remote=True)).allow_remote


def test_the_edge_port_is_never_the_dashboard_s() -> None:
    with pytest.raises(UnsafeBind, match="edge's port"):
        check_bind(DashboardConfig(port=8080, edge_port=8080))
    with pytest.raises(UnsafeBind, match="edge's port"):
        check_bind(DashboardConfig(port=8080, edge_port=8080, allow_remote=True))
    check_bind(DashboardConfig(port=0, edge_port=8080))  # any free port


def _worker(id_: str, **kw: object) -> dict[str, object]:
    return {"id": id_, "type": "worker", "status": "running", "restarts": 0, "meta": {}, **kw}


TREE = {"path": "mesh", "kind": "supervisor", "type": "supervisor", "strategy": "one_for_one",
        "pid": 42, "children": [
            _worker("fabric"),
            {"id": "nodes", "type": "supervisor", "path": "mesh/nodes", "status": "running",
             "restarts": 0, "children": [
                 {"id": "hello", "type": "supervisor", "path": "mesh/nodes/node-1/apps/hello",
                  "status": "running", "restarts": 0, "meta": {"app": "hello"}, "children": [
                      _worker("hello@node-1:abc", status="restarting", restarts=2,
                              meta={"app": "hello", "digest": "abc", "node": "node-1"})]}]}]}


def test_the_view_folds_in_what_only_the_log_knows() -> None:
    index = LogIndex()
    child = {"supervisor": "mesh/nodes/node-1/apps/hello", "child": "hello@node-1:abc"}
    index.add({**child, "event": "started", "ts": "2026-11-27T03:00:00.000Z"})
    index.add({**child, "event": "child_terminated", "ts": "2026-11-27T03:00:05.000Z",
               "reason": "killed by SIGKILL"})
    index.add({**child, "event": "backoff", "ts": "2026-11-27T03:00:05.000Z", "delay": 0.4})
    view = build_view(TREE, {"apps": [], "nodes": []}, index)
    root = view["tree"]
    assert root["pid"] == 42 and root["children"][0]["path"] == "mesh/fabric"
    inst = root["children"][1]["children"][0]["children"][0]
    assert inst["path"] == "mesh/nodes/node-1/apps/hello/hello@node-1:abc"
    assert inst["state"] == "restarting" and inst["restarts"] == 2
    assert inst["backoff"] == 0.4
    assert inst["last_exit"]["reason"] == "killed by SIGKILL"
    assert inst["started_at"] == pytest.approx(1795748400.0)

    index.add({**child, "event": "started", "ts": "2026-11-27T03:00:06.000Z"})
    assert "mesh/nodes/node-1/apps/hello/hello@node-1:abc" not in index.backoff


def test_apps_show_rollout_progress_per_node() -> None:
    status = {"nodes": [{"name": "node-1", "state": "up"}, {"name": "node-2", "state": "up"}],
              "apps": [{"app": "hello", "digest": "new", "previous": "old", "min": 1, "max": 2,
                        "desired": 2, "ready": 3, "state": "updating",
                        "hosts": ["hello.test"], "instances": [
                            {"id": "a", "node": "node-1", "digest": "old", "state": "Draining"},
                            {"id": "b", "node": "node-1", "digest": "new", "state": "Ready"},
                            {"id": "c", "node": "node-2", "digest": "old", "state": "Ready"},
                            {"id": "d", "node": "node-2", "digest": "new",
                             "state": "Launching"}]}]}
    (app,) = build_view(None, status, LogIndex())["apps"]
    assert app["green_ready"] == 1 and app["previous"] == "old"
    assert app["hosts"] == ["hello.test"]
    by_node = {n["node"]: [(i["colour"], i["state"]) for i in n["instances"]]
               for n in app["nodes"]}
    assert by_node == {"node-1": [("blue", "Draining"), ("green", "Ready")],
                       "node-2": [("blue", "Ready"), ("green", "Launching")]}


def test_an_app_in_a_canary_shows_its_share_and_both_error_rates() -> None:
    status = {"nodes": [{"name": "node-1", "state": "up"}],
              "apps": [{"app": "hello", "digest": "new", "previous": "old", "state": "canary",
                        "canary": {"weight": 30, "ready": 1, "count": 1, "error_rate": 12.5,
                                   "old": {"error_rate": 0.5}}, "instances": []},
                       {"app": "other", "digest": "x", "state": "running", "instances": []}]}
    hello, other = build_view(None, status, LogIndex())["apps"]
    assert hello["canary"] == {"weight": 30, "ready": 1, "count": 1, "error_rate": 12.5,
                               "old_error_rate": 0.5}
    assert other["canary"] is None


METRICS = """# TYPE mycelium_edge_requests_total counter
mycelium_edge_requests_total{app="",code="200"} 7
mycelium_edge_requests_total{app="hello",code="200"} 90
mycelium_edge_requests_total{app="hello",code="502"} 4
mycelium_edge_requests_total{app="hello",code="503"} 6
mycelium_edge_requests_total{app="x\\"y",code="404"} 1
mycelium_app_restarts{app="hello"} 1
"""


def test_the_edge_counters_are_read_per_app_with_5xx_as_errors() -> None:
    counts = parse_requests(METRICS)
    assert counts == {"hello": Counts(100.0, 10.0), 'x\\"y': Counts(1.0, 0.0)}


def test_rates_are_differences_over_a_sliding_window() -> None:
    rates = RateHistory(window=10.0)
    rates.add(100.0, {"hello": Counts(0, 0)})
    assert rates.series() == {}
    rates.add(102.0, {"hello": Counts(20, 2)})
    rates.add(104.0, {"hello": Counts(20, 2), "new": Counts(4, 0)})
    rates.add(106.0, {"hello": Counts(6, 0)})  # the edge restarted: counted from 0
    assert rates.series()["hello"] == [[102.0, 10.0, 1.0], [104.0, 0.0, 0.0], [106.0, 3.0, 0.0]]
    assert rates.series()["new"] == [[104.0, 2.0, 0.0]]
    rates.add(115.0, {"hello": Counts(6, 0)})
    assert [p[0] for p in rates.series()["hello"]] == [106.0, 115.0]
    assert "new" not in rates.series()  # nothing left in its window


def test_ui_port_0_turns_the_dashboard_off_and_the_config_gives_the_default() -> None:
    from mycelium.cli.mesh_cmds import _dashboard_config
    from mycelium.operator import load_config

    assert _dashboard_config(load_config(env={}), 0, 8080) is None
    assert _dashboard_config(load_config(env={}), None, 8080) is None  # default: off
    cfg = load_config(env={"MYCELIUM_EDGE_UI_PORT": "9191"})
    assert _dashboard_config(cfg, None, 8080) == DashboardConfig(port=9191, edge_port=8080)
    assert _dashboard_config(cfg, 9292, 8080).port == 9292


def test_only_the_newest_points_go_out_after_the_first_series() -> None:
    rates = RateHistory(window=10.0)
    assert rates.latest() == {}
    rates.add(100.0, {"hello": Counts(0, 0), "idle": Counts(5, 0)})
    rates.add(102.0, {"hello": Counts(4, 2), "idle": Counts(5, 0)})
    assert rates.latest() == {"hello": [102.0, 2.0, 1.0], "idle": [102.0, 0.0, 0.0]}
    rates.add(104.0, {"hello": Counts(4, 2)})  # idle's counter gone (edge restarted)
    assert rates.latest() == {"hello": [104.0, 0.0, 0.0]}
