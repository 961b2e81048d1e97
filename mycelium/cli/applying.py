"""``mycelium plan``/``apply``/``export``: the CLI's side of desired state in a file.

``apply`` runs in four steps, and nothing reaches the mesh before the third:

1. validate the whole file (:func:`mycelium.desired.load_file`; a bad file is exit 2);
2. take the home's apply lock (a second ``apply`` on the same home waits here, then plans
   against what the first one left), read the mesh (the ``desired`` op) and :func:`diff`;
3. pack and publish the spores that changed (only those), then send every change as ONE
   batch that the mesh applies all or nothing, and only if no app it names moved since step
   2 (a ``deploy`` or an apply through another member in between: exit 1, nothing changed);
4. follow every rollout at once with one status poll per tick (the mesh runs them in
   parallel), judged as ``deploy --wait`` judges one (:func:`.deploying.judge`).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycelium.desired import AppChange, DesiredFile, RunningApp, load_file
from mycelium.desired.model import DEFAULTS
from mycelium.home import Home
from mycelium.states import InstanceState

from .deploying import app_doc, judge, progress, who

__all__ = ["Outcome", "apply_lock", "follow", "load_desired", "plan_file", "publish_batch",
           "read_mesh"]

Request = Callable[..., Any]

SLACK = 5.0
"""Seconds the CLI waits beyond an app's own rollout deadline (``timeout`` + ``warmup``)."""


def load_desired(home: Home, path: Path) -> DesiredFile:
    """Validate ``path`` against the home's repo (``digest`` tables) and spore limits.

    Raises:
        BadFile: the first problem (exit 2).
    """
    import os

    import mycelium.spores as sp
    from mycelium.operator.config import load_config

    spores = load_config(None, os.environ, home=home).spores
    limits = sp.Limits.from_mb(spores.max_archive_mb, spores.max_binary_mb)
    repo = sp.Repo(home.repo)

    def lookup(raw: str) -> tuple[str, sp.Manifest]:
        digest = repo.resolve(raw)
        return digest, repo.verify(digest, sp.load_trusted(home), limits).manifest

    return load_file(path, lookup, limits, secret_exists(home))


def secret_exists(home: Home) -> Callable[[str, str], bool]:
    """Whether app's secret NAME is set: asked of the running mesh (its store may be etcd),
    else of the home's own store; each app's names are read once."""
    from mycelium.operator.client import ControlClient, NoMesh
    from mycelium.secrets import home_secrets

    known: dict[str, set[str]] = {}

    def exists(app: str, name: str) -> bool:
        if app not in known:
            try:
                rows = ControlClient(home).request("secret_list", app=app)
                known[app] = {str(r["name"]) for r in rows}
            except NoMesh:
                known[app] = {n for n, _t in home_secrets(home).list(app)}
        return name in known[app]

    return exists


def read_mesh(request: Request) -> tuple[dict[str, RunningApp], float]:
    """Every planned app of the running mesh, by name, and its default rollout timeout.

    Raises:
        NoMesh: no mesh runs on the home (exit 1).
    """
    reply = request("desired")
    timeout = float((reply.get("defaults") or {}).get("timeout", DEFAULTS["timeout"]))
    return {doc["app"]: RunningApp.from_doc(doc) for doc in reply["apps"]}, timeout


@contextlib.contextmanager
def apply_lock(home: Home, note: Callable[[str], None]) -> Iterator[None]:
    """Hold ``<home>/state/apply.lock``: applies on one home run one after the other."""
    if not home.state.is_dir():  # no mesh ever ran here: reading it fails with the reason
        yield
        return
    with open(home.state / "apply.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            note(f"waiting for another apply on this home (pid {f.read().strip() or '?'}) "
                 "to finish…")
            fcntl.flock(f, fcntl.LOCK_EX)
        import os

        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def pack_changed(home: Home, changes: Sequence[AppChange], key: str) -> dict[str, str]:
    """Pack and publish the spore of every changed ``binary`` table; digests by app.

    Raises:
        KeyFileError: the signing key is missing or unsafe (exit 2; nothing was packed).
    """
    import os

    import mycelium.spores as sp
    from mycelium.operator.config import load_config

    todo = [c for c in changes if c.changing and c.pack and c.desired is not None]
    if not todo:
        return {}
    sp.load_signing_key(home, key)  # a missing key fails before the first spore is packed
    cfg = load_config(None, os.environ, home=home).spores
    limits = sp.Limits.from_mb(cfg.max_archive_mb, cfg.max_binary_mb)

    def one(change: AppChange) -> tuple[str, str]:
        want = change.desired
        assert want is not None and want.binary is not None
        return change.app, sp.publish(home, binary=want.binary, manifest=want.manifest,
                                      key=key, limits=limits)

    with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
        return dict(pool.map(one, todo))


def publish_batch(request: Request, changes: Sequence[AppChange],
                  running: dict[str, RunningApp], digests: dict[str, str],
                  prune: bool) -> dict[str, int]:
    """Send every change as one batch; the generation each published plan got, by app.

    The batch expects every app the file names (and, with ``prune``, every running app) at
    the generation read, so a change anywhere in that view since refuses all of it.

    Raises:
        ControlError: the mesh refused the batch (moved meanwhile: exit 1; bad plan: exit 2).
    """
    plans = []
    asker = who()
    for c in changes:
        if not c.changing or c.action == "destroy" or c.desired is None:
            continue
        s = c.desired.settings
        plans.append({"app": c.app, "digest": digests.get(c.app) or c.digest, "min": s.min,
                      "max": s.max, "max_instances": s.max_instances, "cpu": s.cpu,
                      "mem": s.mem, "warmup": s.warmup, "timeout": s.timeout,
                      "who": asker, "hosts": list(s.hosts), **_canary(c),
                      "env_secrets": list(c.desired.env_secrets)})
    stops = [c.app for c in changes if c.action == "destroy"]
    named = {c.app for c in changes} | (set(running) if prune else set())
    expect = {app: running[app].generation if app in running else 0 for app in sorted(named)}
    reply = request("apply", timeout=90.0, plans=plans, stops=stops, expect=expect)
    return {p["app"]: int(p["generation"]) for p in reply["plans"]}


def _canary(change: AppChange) -> dict[str, Any]:
    """The canary fields of an update that changes the spore (a canary needs a running one)."""
    assert change.desired is not None
    instances, weight, promote = change.desired.canary
    if not instances or change.action != "update" or change.running is None or (
            change.digest is not None and change.digest == change.running.digest):
        return {}
    return {"canary": instances, "canary_weight": weight or None,
            "auto_promote": promote or None}


@dataclass(slots=True)
class Outcome:
    """How one app's change ended (or stands): ``ok``, ``failed``, ``timed out``, ``waiting``."""

    app: str
    action: str
    result: str = "waiting"
    detail: str = ""
    ready: int = 0
    desired: int = 0
    took: float = 0.0
    state: str = ""

    @property
    def done(self) -> bool:
        """No longer waiting."""
        return self.result != "waiting"


def follow(request: Request, changes: Sequence[AppChange], digests: dict[str, str],
           generations: dict[str, int], started: float, timeout: float | None,
           on_change: Callable[[Outcome], None],
           on_line: Callable[[str], None]) -> list[Outcome]:
    """Poll the mesh until every change converged, failed or ran out of time.

    ``on_change`` gets an :class:`Outcome` whenever one changes; ``on_line`` gets the per-node
    phases of blue/green updates (``hello node-2: draining``).
    """
    todo = [c for c in changes if c.changing]
    outcomes = {c.app: Outcome(c.app, c.action) for c in todo}
    deadlines = {}
    for c in todo:
        own = SLACK if c.desired is None else \
            c.desired.settings.timeout + c.desired.settings.warmup + SLACK
        deadlines[c.app] = started + (own if timeout is None else timeout)
    phases: dict[str, dict[str, int]] = {c.app: {} for c in todo}
    while True:
        status = request("status")
        now = time.monotonic()
        for c in todo:
            out = outcomes[c.app]
            if out.done:
                continue
            before = (out.result, out.ready, out.desired, out.state)
            if c.action == "destroy":
                _judge_destroy(out, status)
            else:
                full = digests.get(c.app) or c.digest or ""
                doc = app_doc(status, c.app)
                if doc is not None and c.action == "update":
                    progress(c.app, full, doc, phases[c.app], on_line)
                _judge_rollout(out, judge(doc, full, generations.get(c.app, 0)))
                if out.result == "ok" and doc is not None and not _replaced(c, doc):
                    out.result = "waiting"  # the same digest: the old instances are not gone
                canary = (doc or {}).get("canary")
                if not out.done and canary is not None and canary["digest"] == full \
                        and canary["ready"] >= canary["count"]:
                    out.result, out.detail = "ok", "canary Ready: mycelium promote continues"
            if not out.done and now > deadlines[c.app]:
                out.result, out.detail = "timed out", (
                    f"{out.ready}/{out.desired} Ready ({out.state}) after "
                    f"{deadlines[c.app] - started:.0f}s")
            if out.done:
                out.took = now - started
            if (out.result, out.ready, out.desired, out.state) != before:
                on_change(out)
        if all(o.done for o in outcomes.values()):
            return [outcomes[c.app] for c in todo]
        time.sleep(0.05)


def _replaced(change: AppChange, doc: dict[str, Any]) -> bool:
    """Whether a rollout in place (:attr:`AppChange.rolls_in_place`) replaced every instance
    that ran when the mesh was read (any other change: True)."""
    if not change.rolls_in_place or change.running is None:
        return True
    before = set(change.running.instances)
    return not any(i["id"] in before and i["state"] != InstanceState.STOPPED
                   for i in doc["instances"])


def _judge_rollout(out: Outcome, view: Any) -> None:
    out.ready, out.desired, out.state = view.ready, view.desired, view.state
    if view.outcome == "done":
        out.result = "ok"
    elif view.outcome == "rolled back":
        out.result, out.detail = "failed", f"rolled back: {view.detail}"
    elif view.outcome == "superseded":
        out.result, out.detail = "failed", (f"superseded by {view.detail[:12]} (another "
                                            "deploy or apply)")
    elif view.outcome == "stopped":
        out.result, out.detail = "failed", "the app was stopped meanwhile"


def _judge_destroy(out: Outcome, status: dict[str, Any]) -> None:
    live = [i for doc in status["apps"] if doc["app"] == out.app
            for i in doc["instances"] if i["state"] != InstanceState.STOPPED]
    out.ready, out.state = len(live), "stopping" if live else "stopped"
    if any(doc["app"] == out.app and doc["digest"] is not None for doc in status["apps"]):
        out.result, out.detail = "failed", "deployed again meanwhile (another deploy or apply)"
    elif not live:
        out.result = "ok"




def plan_file(home: Home, request: Request, file: Path, prune: bool, as_json: bool) -> None:
    """``mycelium plan``: validate, read the mesh, print the plan (the Typer command and the
    fast path both run this, so that both print the same bytes).

    Raises:
        BadFile: a bad file (exit 2), before the mesh is asked anything.
        NoMesh: no mesh runs on the home (exit 1).
    """
    import sys

    from mycelium.desired import diff
    from mycelium.desired.text import plan_json, plan_lines, summary_line

    from .lines import out

    desired = load_desired(home, file)
    running, default_timeout = read_mesh(request)
    changes = diff(desired.apps, running, prune, default_timeout)
    kept = [] if prune else sorted(set(running) - set(desired.names()))
    if as_json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(plan_json(changes, str(file), prune, kept)) + b"\n")
        sys.stdout.flush()
        return
    sys.stdout.write("".join(f"{line}\n" for line in plan_lines(changes)))
    out(summary_line(changes, len(kept)))
