"""The dashboard in a real headless Chromium, against a real 3-node mesh serving hello.

The page is loaded once (module fixture) and never reloaded: everything after the first load
arrives by push (Server-Sent Events).
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from dash_helpers import MeshWithDashboard, cli, wait_until

pytestmark = pytest.mark.timeout(60)

ENTRIES_JS = """return [...document.querySelectorAll('#tree .entry')].map(e => ({
    path: e.dataset.path, state: e.dataset.state, pid: e.dataset.pid,
    restarts: Number(e.dataset.restarts), text: e.textContent}));"""
LOG_JS = """return [...document.querySelectorAll('#log li')].map(li => ({
    event: li.dataset.event, app: li.dataset.app, child: li.dataset.child,
    hidden: li.hidden, text: li.textContent}));"""


def entries(driver: Any) -> dict[str, dict[str, Any]]:
    return {e["path"]: e for e in driver.execute_script(ENTRIES_JS)}


def hello_instances(driver: Any) -> dict[str, dict[str, Any]]:
    return {p: e for p, e in entries(driver).items()
            if "/apps/hello/hello@" in p and e["state"] == "Ready" and e["pid"]}


@pytest.fixture(scope="module")
def page(browser: Any, mesh: MeshWithDashboard) -> Any:
    """The dashboard, loaded once, showing hello Ready on the three nodes."""
    browser.get(mesh.ui_url)
    wait_until(lambda: len(hello_instances(browser)) == 3, 20.0, "3 Ready hello instances")
    return browser


def test_the_page_shows_the_supervision_tree_of_a_three_node_mesh(page: Any) -> None:
    tree = entries(page)
    for path in ("mesh", "mesh/fabric", "mesh/edge", "mesh/control", "mesh/nodes"):
        assert tree[path]["state"] == "running", tree[path]
    for node in ("node-1", "node-2", "node-3"):
        assert f"mesh/nodes/{node}" in tree
        assert f"mesh/nodes/{node}/agent" in tree
        assert f"mesh/nodes/{node}/apps/hello" in tree
    instances = hello_instances(page)
    assert sorted(p.split("/")[2] for p in instances) == ["node-1", "node-2", "node-3"]
    assert all("pid " in e["text"] and "restarts 0" in e["text"] for e in instances.values())
    row = wait_until(lambda: page.execute_script(
        "const r = document.querySelector('#apps tr[data-app=hello]');"
        "return r && r.textContent.includes('3/3') ? r.textContent : null;"), 5.0, "hello 3/3")
    assert "running" in row and "1/3" in row  # state and min/max


def test_a_kill_9_shows_as_a_termination_and_a_respawn_within_2s(page: Any) -> None:
    path, victim = next((p, e) for p, e in hello_instances(page).items() if "/node-2/" in p)
    child = path.rsplit("/", 1)[1]
    old_pid = int(victim["pid"])
    restarted_before = sum(1 for r in page.execute_script(LOG_JS)
                           if r["event"] == "child_restarted" and r["child"] == child)

    start = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)

    def terminated() -> bool:
        return any(r["event"] == "child_terminated" and r["child"] == child
                   and "killed by SIGKILL" in r["text"] and f"pid={old_pid}" in r["text"]
                   for r in page.execute_script(LOG_JS))

    def respawned() -> bool:
        restarted = sum(1 for r in page.execute_script(LOG_JS)
                        if r["event"] == "child_restarted" and r["child"] == child)
        entry = entries(page).get(path)
        return (restarted > restarted_before and entry is not None and entry["pid"] != ""
                and int(entry["pid"]) != old_pid and entry["restarts"] >= 1)

    wait_until(terminated, 2.0, "the termination on the page")
    wait_until(respawned, max(0.1, 2.0 - (time.monotonic() - start)), "the respawn on the page")
    assert time.monotonic() - start < 2.0
    assert "killed by SIGKILL" in entries(page)[path]["text"]  # the last exit, on the entry


def test_the_log_stream_filters_by_app(page: Any) -> None:
    from selenium.webdriver.support.ui import Select  # after the browser fixture's check

    select = Select(page.find_element("id", "app-filter"))
    select.select_by_value("hello")
    rows = page.execute_script(LOG_JS)
    shown = [r for r in rows if not r["hidden"]]
    assert shown and all(r["app"] == "hello" for r in shown)
    assert any(r["app"] == "" and r["hidden"] for r in rows)  # mesh actors' records, hidden

    select.select_by_value("-")  # the mesh's own actors
    shown = [r for r in page.execute_script(LOG_JS) if not r["hidden"]]
    assert shown and all(r["app"] == "" for r in shown)

    select.select_by_value("")
    assert not any(r["hidden"] for r in page.execute_script(LOG_JS))


def test_request_and_error_rates_are_charted_per_app(page: Any,
                                                     mesh: MeshWithDashboard) -> None:
    base = f"http://127.0.0.1:{mesh.edge_port}"
    for _ in range(40):
        with urllib.request.urlopen(f"{base}/hello/", timeout=5) as resp:
            assert resp.status == 200
    chart = wait_until(lambda: page.execute_script(
        "const c = document.querySelector('.chart[data-app=hello]');"
        "return c && c.querySelector('polyline') && !/ 0\\.0 req/.test(' ' + c.textContent)"
        " ? c.textContent : null;"), 10.0, "a non-zero hello request rate")
    assert "req/s" in chart and "err/s" in chart
    shot = os.environ.get("MYCELIUM_DASHBOARD_SCREENSHOT")
    if shot:  # how docs/dashboard.png is made
        page.execute_script("document.getElementById('app-filter').value = '';")
        page.save_screenshot(str(Path(shot)))


def test_a_blue_green_update_shows_its_progress_per_node(page: Any,
                                                         mesh: MeshWithDashboard) -> None:
    apps_js = """return [...document.querySelectorAll('#apps tr[data-app=hello] td[data-node]')]
        .map(td => [td.dataset.node, [...td.querySelectorAll('.inst')].map(
            i => i.textContent)]);"""
    v2 = mesh.digests["hello-v2"]
    done = cli(mesh.home, "deploy", "hello", v2, "--max", "3", "--warmup", "2", "--no-wait")
    assert done.returncode == 0, done.stderr

    def side_by_side() -> bool:
        cells = dict(page.execute_script(apps_js))
        return any("blue Ready" in c and "green Ready" in c for c in cells.values())

    wait_until(side_by_side, 20.0, "blue and green Ready side by side on a node")
    row = page.execute_script(
        "return document.querySelector('#apps tr[data-app=hello]').textContent")
    assert "updating" in row and f"{v2[:12]} ←" in row
    wait_until(lambda: all(c == ["green Ready"] for _, c in page.execute_script(apps_js)),
               20.0, "only green Ready on every node")


def test_the_browser_reports_no_console_errors(page: Any) -> None:
    severe = [e for e in page.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []


def test_the_page_is_self_contained_and_read_only(mesh: MeshWithDashboard) -> None:
    with urllib.request.urlopen(mesh.ui_url, timeout=5) as resp:
        html = resp.read().decode()
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
    for method in ("POST", "PUT", "DELETE"):
        request = urllib.request.Request(mesh.ui_url + "api/state", data=b"{}", method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 405
