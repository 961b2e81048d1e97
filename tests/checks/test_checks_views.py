"""How unready instances show: the status document, `mycelium status` and the dashboard."""

from __future__ import annotations

from mycelium.fabric.view import routes, status_document
from mycelium.messages import CheckResult, InstanceInfo, Plan
from mycelium.operator.dashboard.view import apps_view
from mycelium.operator.render import render_status

PLAN = Plan(app="web", digest="d" * 64, min=1, max=2, warmup=0.0, timeout=60.0)


def info(iid: str, serving: bool, **extra: object) -> InstanceInfo:
    return InstanceInfo(id=iid, app="web", node=f"node-{iid[-1]}", digest="d" * 64,
                        state="Ready", child="c", url=f"http://127.0.0.1:4000{iid[-1]}",
                        serving=serving, **extra)  # type: ignore[arg-type]


UNREADY = info("web@node-1#1", False, status_text="draining",
               last_check=CheckResult("http-readiness", False, 1796589686.5, "HTTP 503"))
SERVING = info("web@node-2#2", True)


def test_routes_leave_out_ready_instances_that_do_not_serve() -> None:
    (route,) = routes({"web": PLAN}, [UNREADY, SERVING])
    assert [e.instance for e in route.endpoints] == ["web@node-2#2"]
    (empty,) = routes({"web": PLAN}, [UNREADY])
    assert empty.endpoints == ()  # the edge answers 503


def test_the_status_document_shows_serving_last_check_and_status_text() -> None:
    doc = status_document({"web": PLAN}, {}, [UNREADY, SERVING], {"node-1": "up"}, {})
    first, second = doc["apps"][0]["instances"]
    assert first["state"] == "Ready" and first["serving"] is False
    assert first["last_check"] == {"check": "http-readiness", "ok": False,
                                   "at": "2026-12-06T20:41:26.500Z", "detail": "HTTP 503"}
    assert first["status_text"] == "draining"
    assert second["serving"] is True and second["last_check"] is None
    launching = status_document({"web": PLAN}, {}, [InstanceInfo(
        id="web@node-1#3", app="web", node="node-1", digest="d" * 64, state="Launching",
        child="c")], {"node-1": "up"}, {})
    assert launching["apps"][0]["instances"][0]["serving"] is False


def test_mycelium_status_and_the_dashboard_say_not_serving() -> None:
    doc = status_document({"web": PLAN}, {}, [UNREADY, SERVING], {"node-1": "up"}, {})
    text = render_status(doc)
    assert 'not serving (http-readiness: HTTP 503)  "draining"' in text
    assert text.count("not serving") == 1
    (app,) = apps_view(doc)
    shown = {i["id"]: i for n in app["nodes"] for i in n["instances"]}
    assert shown["web@node-1#1"]["unready"] and shown["web@node-1#1"]["check"] == (
        "http-readiness: HTTP 503")
    assert not shown["web@node-2#2"]["unready"] and shown["web@node-2#2"]["check"] is None
