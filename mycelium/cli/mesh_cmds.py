"""Commands that talk to a running mesh: up, deploy, stop, status, tree, logs, kill, chaos,
repl, down (docs/reference.md#commands). Each one parses, sends one request over the control
socket, renders.
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from mycelium.defaults import DeployDefaults
from mycelium.errors import BadInput, OperationFailed
from mycelium.home import Home
from mycelium.operator.client import ControlClient, NoMesh

from .app import HomeOption, app, home_of, out
from .cert_cmds import reload_on_hup, tls_settings
from .deploying import deploy_app
from .fast import signal_number, stop_app

if TYPE_CHECKING:
    from mycelium.mesh import Mesh

__all__ = ["deploy_cmd", "down_cmd", "kill_cmd", "logs_cmd", "status_cmd", "stop_cmd",
           "tree_cmd", "up_cmd"]


# --------------------------------------------------------------------------- up / down


@app.command("up")
def up_cmd(
    home: HomeOption = None,
    nodes: Annotated[int | None, typer.Option(
        "--nodes", min=1, help="Node agents to start (default: config mesh.nodes, 3)")] = None,
    edge_port: Annotated[int | None, typer.Option(
        "--edge-port", min=0, max=65535,
        help="Edge TCP port; 0 picks a free one (default: config edge.port, 8080)")] = None,
    edge_host: Annotated[str | None, typer.Option(
        "--edge-host", help="Address the edge listens on (default: config edge.host, "
                            "127.0.0.1)")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="TOML config file (default: <home>/mycelium.toml if it exists)")] = None,
    repl: Annotated[bool, typer.Option(
        "--repl", help="Also run a Python console inside the mesh's process")] = False,
    fabric: Annotated[str | None, typer.Option(
        "--fabric", help="etcd://HOST:PORT[,HOST:PORT…] (or etcds://… for TLS, with "
                         "[fabric] ca/cert/key/user): keep the mesh's state in etcd and "
                         "join a multi-machine mesh")] = None,
    insecure_fabric: Annotated[bool, typer.Option(
        "--insecure-fabric", help="Allow plain etcd:// to hosts that are not loopback "
                                  "(unencrypted, unauthenticated)")] = False,
    node_prefix: Annotated[str | None, typer.Option(
        "--node-prefix", help="Name this member's nodes PREFIX-1 … PREFIX-N (default: the "
                              "host name; with --fabric)")] = None,
    advertise_host: Annotated[str | None, typer.Option(
        "--advertise-host", help="Address other machines reach this one's workloads and "
                                 "spores at (with --fabric)")] = None,
    no_edge: Annotated[bool, typer.Option(
        "--no-edge", help="Run no edge on this member, only workloads (with --fabric)")] = False,
    lease_ttl: Annotated[float, typer.Option(
        "--lease-ttl", help="Seconds of silence after which etcd drops this member's nodes "
                            "and endpoints (with --fabric)")] = 5.0,
    ui_port: Annotated[int | None, typer.Option(
        "--ui-port", min=0, max=65535,
        help="Serve the read-only dashboard on this port; 0 turns it off (default: config "
             "edge.ui_port, 0)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", help="PEM certificate (chain): the edge also terminates TLS")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", help="PEM private key of --tls-cert")] = None,
    tls_port: Annotated[int | None, typer.Option(
        "--tls-port", min=0, max=65535,
        help="TLS port, host as the edge's (default: config edge.tls_port, 8443)")] = None,
    https_redirect: Annotated[bool, typer.Option(
        "--https-redirect", help="The plain port answers 308 to https:// for every host a "
                                 "certificate names")] = False,
) -> None:
    """Run the whole supervision tree in the foreground until SIGINT/SIGTERM or `down`.

    Prints 'mesh up' once the edge accepts requests, then the supervision log.

    Exit 1 if a mesh already runs on this home. Options and config: docs/reference.md.
    """
    from mycelium.operator import load_config
    from supervisors import StartError

    h = home_of(home)
    cfg = load_config(config, home=h)
    port = cfg.edge.port if edge_port is None else edge_port
    ui = _dashboard_config(cfg, ui_port, port)
    tls = tls_settings(cfg, tls_cert, tls_key, tls_port, https_redirect)
    if fabric is None and (node_prefix or advertise_host or no_edge or insecure_fabric):
        raise BadInput("--node-prefix, --advertise-host, --no-edge and --insecure-fabric need "
                       "--fabric etcd://…")
    mesh = _build_mesh(h, cfg, nodes or cfg.mesh.nodes, edge_host or cfg.edge.host, port,
                       fabric=fabric, node_prefix=node_prefix, advertise_host=advertise_host,
                       edge=not no_edge, ttl=lease_ttl, tls=tls,
                       insecure=insecure_fabric)
    from mycelium.operator.sdnotify import SystemdNotifier
    systemd = SystemdNotifier()  # before any workload starts: they must not inherit its socket
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: mesh.request_stop())
    signal.signal(signal.SIGHUP, lambda *_: reload_on_hup(mesh))
    try:
        mesh.start()
        if ui is not None:
            mesh.start_dashboard(ui)
    except StartError as exc:
        mesh.stop()
        raise OperationFailed(f"the mesh could not start: {exc}") from exc
    except BaseException:
        mesh.stop()
        raise
    try:
        edge = (f"edge http://{mesh.edge_host}:{mesh.edge_bound_port} ({mesh.edge_id})"
                if mesh.edge_bound_port is not None else "no edge")
        if mesh.edge_tls_port is not None:
            edge += f", https://{mesh.edge_host}:{mesh.edge_tls_port}"
        out(f"mesh up: {edge}, {len(mesh.node_names)} nodes "
             f"({', '.join(mesh.node_names)}), home {h.root}")
        if mesh.dashboard is not None:
            out(f"dashboard {mesh.dashboard.url}")
        systemd.ready(f"mesh up: {edge}")
        systemd.start_watchdog(lambda: _edge_answers(mesh))
        if repl:
            mesh_tools.console(mesh)
        else:
            while not mesh.stopped.wait(0.5):
                pass
    finally:
        systemd.stopping()
        with contextlib.suppress(OSError):  # a closed stdout must not leave the tree running
            out("mesh shutting down")
        mesh.stop()
        with contextlib.suppress(OSError):
            out("mesh down")
    if mesh.failure is not None:
        raise OperationFailed(f"the mesh gave up: {mesh.failure}")


def _build_mesh(h: Home, cfg: Any, nodes: int, edge_host: str, edge_port: int, *,
                fabric: str | None, node_prefix: str | None, advertise_host: str | None,
                edge: bool, ttl: float, tls: Any = None, insecure: bool = False) -> Mesh:
    """The mesh ``up`` runs: one machine's, or (``--fabric``) a member of a multi-machine one.

    Raises:
        BadInput: a bad ``--fabric``, ``--node-prefix`` or ``--lease-ttl``; plain etcd:// to
            another machine without ``insecure``; bad ``[fabric]`` TLS files or credentials.
    """
    from mycelium.mesh import LocalFabric, Mesh
    from mycelium.mesh.backend import FabricBackend

    backend: FabricBackend
    if fabric is None:
        backend = LocalFabric(h, nodes)
    else:
        import os

        from mycelium.fabric.access import PASSWORD_ENV, fabric_access
        from mycelium.member import Member
        from mycelium.spores import Limits

        # checked before anything connects: insecure, unreadable TLS files, no password
        access = fabric_access(fabric, ca=cfg.fabric.ca, cert=cfg.fabric.cert,
                               key=cfg.fabric.key, user=cfg.fabric.user,
                               password=os.environ.get(PASSWORD_ENV), insecure=insecure)
        limits = Limits.from_mb(cfg.spores.max_archive_mb, cfg.spores.max_binary_mb)
        backend = Member(h, limits, nodes, fabric=fabric, node_prefix=node_prefix,
                         advertise_host=advertise_host, edge=edge, ttl=ttl, access=access)
    # colour on a terminal, plain otherwise
    return Mesh(h, cfg, backend, edge_host, edge_port, out=out, color=sys.stdout.isatty(),
                tls=tls)


def _edge_answers(mesh: Any) -> bool:
    """The mesh runs and its edge (if it has one) answers ``/_mycelium/health``: the watchdog."""
    if mesh.stopped.is_set():
        return False
    if mesh.edge_bound_port is None:
        return True
    from mycelium.node.health import probe_health
    host = "127.0.0.1" if mesh.edge_host in ("", "0.0.0.0", "::") else mesh.edge_host
    host = f"[{host}]" if ":" in host else host
    return probe_health(f"http://{host}:{mesh.edge_bound_port}/_mycelium/health", 1.0)


def _dashboard_config(cfg: Any, ui_port: int | None, edge_port: int) -> Any:
    """The dashboard's settings (None: off), checked before anything starts.

    Raises:
        UnsafeBind: the edge's port, or a non-loopback host without ``[ui] allow_remote``.
    """
    port = cfg.edge.ui_port if ui_port is None else ui_port
    if not port:
        return None
    from mycelium.operator.dashboard.bind import DashboardConfig, check_bind

    return check_bind(DashboardConfig(port=port, host=cfg.ui.host,
                                      allow_remote=cfg.ui.allow_remote,
                                      edge_port=edge_port or None))


@app.command("down")
def down_cmd(home: HomeOption = None) -> None:
    """Ask the running mesh to shut down gracefully; return once it is down.

    With no mesh running, stop what a killed one left (edge workers, workloads), if anything.
    """
    h = home_of(home)
    try:
        ControlClient(h).request("down")
    except NoMesh:
        from mycelium.mesh.leftover_ops import stop_left_behind
        from mycelium.operator import load_config

        left = stop_left_behind(h, load_config(None, home=h))
        if not left:
            raise
        out(f"mesh at {h.root} is down (a killed mesh left {len(left.workers)} edge "
            f"worker(s) and {len(left.workloads)} workload(s) running: stopped)")
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not _locked(h):
            out(f"mesh at {h.root} is down")
            return
        time.sleep(0.05)
    raise OperationFailed(f"the mesh at {h.root} did not stop within 120s")


def _locked(h: Home) -> bool:
    try:
        with open(h.lock_file, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- deploy / stop


@app.command("deploy")
def deploy_cmd(
    app_name: Annotated[str, typer.Argument(
        metavar="APP", help="App name; it must be the spore manifest's name")],
    digest: Annotated[str, typer.Argument(
        metavar="DIGEST", help="Digest of a published spore (a unique prefix of 4+ hex)")],
    home: HomeOption = None,
    n_min: Annotated[int, typer.Option(
        "--min", help="Ready instances below which the app is degraded")] = DeployDefaults.MIN,
    n_max: Annotated[int, typer.Option(
        "--max", help="Instances wanted, spread over the nodes (several per node once "
                      "every node that fits has one)")] = DeployDefaults.MAX,
    max_instances: Annotated[int | None, typer.Option(
        "--max-instances", help="Hard cap on instances mesh-wide (default: --max)")] = None,
    cpu: Annotated[float, typer.Option(
        "--cpu", help="CPU cores each instance reserves on its node")] = DeployDefaults.CPU,
    mem: Annotated[int, typer.Option(
        "--mem", help="Memory budget per instance in MB; beyond it the workload is killed")
    ] = DeployDefaults.MEM,
    warmup: Annotated[float | None, typer.Option(
        "--warmup", help="Seconds blue and green serve side by side before blue drains "
                         "(default: the manifest's warmup, else 0)")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until the rollout is done (exit 1 if it failed) or "
                                 "return at once")] = True,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Seconds new instances have to get Ready, else the update is "
                          "rolled back (default: the mesh's rollout.timeout, "
                          f"{DeployDefaults.TIMEOUT:g})")] = None,
    canary: Annotated[int | None, typer.Option(
        "--canary", help="Run N instances of DIGEST beside the old ones until `mycelium "
                         "promote` (N >= 1)")] = None,
    canary_weight: Annotated[int | None, typer.Option(
        "--canary-weight", help="Percent of requests the canaries take, 1-99 (default: "
                                "their share by count)")] = None,
    auto_promote: Annotated[float | None, typer.Option(
        "--auto-promote", help="Promote the canary after S seconds of passing checks")
    ] = None,
    hosts: Annotated[list[str] | None, typer.Option(
        "--host", help="A host name routed to APP with the path unchanged (exact, or "
                       "*.suffix); repeatable; --host '' clears; none given keeps the app's")
    ] = None,
    idle: Annotated[float | None, typer.Option(
        "--idle", help="With --min 0: seconds without a request before the last instance "
                       "stops (default 300)")] = None,
    target_concurrency: Annotated[float | None, typer.Option(
        "--target-concurrency", help="Autoscale: concurrent requests per instance; desired "
                                     "= clamp(ceil(in_flight / C), min, max)")] = None,
) -> None:
    """Deploy or update APP: set its budget and publish its plan.

    A new digest for a running app is a blue/green update, rolled back on --timeout.

    Progress goes to stderr. Semantics and exit codes: docs/reference.md#deploy.
    """
    deploy_app(lambda: ControlClient(home_of(home)).request, app_name, digest, n_min=n_min,
               n_max=n_max, max_instances=max_instances, cpu=cpu, mem=mem, warmup=warmup,
               wait=wait, timeout=timeout, canary=canary, canary_weight=canary_weight,
               auto_promote=auto_promote, hosts=hosts, idle=idle,
               target_concurrency=target_concurrency)


@app.command("stop")
def stop_cmd(app_name: Annotated[str, typer.Argument(metavar="APP", help="The app to stop")],
             home: HomeOption = None) -> None:
    """Remove the app's plan: its instances drain and stop; nothing respawns."""
    stop_app(ControlClient(home_of(home)).request, app_name)


# --------------------------------------------------------------------------- views


@app.command("status")
def status_cmd(app_name: Annotated[str | None, typer.Argument(
                   metavar="[APP]", help="Show only this app (exit 2 if it is unknown)")] = None,
               home: HomeOption = None,
               as_json: Annotated[bool, typer.Option(
                   "--json", help="Print one JSON document (docs/reference.md#status-json)")
               ] = False) -> None:
    """Apps, plans, instances and nodes of the running mesh."""
    status = ControlClient(home_of(home)).request("status", app=app_name)
    if app_name is not None and not status["apps"]:
        raise BadInput(f"no app named {app_name!r}")
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(status) + b"\n")
        return
    from mycelium.operator.render import render_status

    out(render_status(status))


@app.command("tree")
def tree_cmd(home: HomeOption = None,
             as_json: Annotated[bool, typer.Option(
                 "--json", help="Print the tree as one JSON document")] = False) -> None:
    """The live supervision tree: supervisors, workers, pids, states, restart counts."""
    tree = ControlClient(home_of(home)).request("tree")
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(tree) + b"\n")
        return
    from mycelium.operator.render import render_tree

    sys.stdout.write(render_tree(tree, color=sys.stdout.isatty()))
    sys.stdout.flush()


@app.command("logs")
def logs_cmd(home: HomeOption = None,
             app_name: Annotated[str | None, typer.Option(
                 "--app", help="Only the records of this app")] = None,
             follow: Annotated[bool, typer.Option(
                 "--follow", "-f", help="Keep printing new records as they are written")] = False,
             as_json: Annotated[bool, typer.Option(
                 "--json", help="One JSON object per line (docs/reference.md#supervision-log)")
             ] = False,
             access: Annotated[bool, typer.Option(
                 "--access", help="The edge's access log instead (docs/reference.md#edge)")
             ] = False) -> None:
    """The supervision log (or the edge's access log), oldest first; no mesh needed."""
    from mycelium.operator import SupervisionLog, format_record

    if access:
        from mycelium.edge.accesslog import format_access
        from mycelium.edge.config import ACCESS_LOG_NAME

        log = SupervisionLog(home_of(home), name=ACCESS_LOG_NAME)
    else:
        log = SupervisionLog(home_of(home))
    records = log.follow(app_name) if follow else log.read(app_name)
    if access and not follow:  # edge workers' batches interleave: merge them in time order
        from mycelium.edge.accesslog import in_time_order

        records = in_time_order(records)
    color = sys.stdout.isatty()
    with contextlib.suppress(KeyboardInterrupt):
        for record in records:
            if as_json:
                sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
                sys.stdout.flush()
            elif access:
                out(format_access(record))
            else:
                out(format_record(record, color=color))


# --------------------------------------------------------------------------- crash tests


@app.command("kill")
def kill_cmd(app_name: Annotated[str | None, typer.Argument(
                 metavar="[APP]", help="The app whose workload processes to signal")] = None,
             home: HomeOption = None,
             node: Annotated[str | None, typer.Option(
                 "--node", help="Only the instance on this node (default: every node)")] = None,
             sig: Annotated[str, typer.Option(
                 "--signal", help="Signal name or number: SIGTERM, TERM, 15, …")
             ] = "SIGKILL",
             edge: Annotated[bool, typer.Option(
                 "--edge", help="Signal one edge worker process instead ([edge] workers)")
             ] = False) -> None:
    """Crash test: signal the workload process(es) of APP, or one edge worker; print one pid
    per line."""
    number = signal_number(sig)
    if edge:
        if app_name is not None or node is not None:
            raise BadInput("kill --edge takes no APP and no --node")
        pids = ControlClient(home_of(home)).request("kill", edge=True, signal=number)
    elif app_name is None:
        raise BadInput("kill needs an APP (or --edge)")
    else:
        pids = ControlClient(home_of(home)).request("kill", app=app_name, node=node,
                                                    signal=number)
    for pid in pids:
        out(str(pid))


from . import mesh_tools  # noqa: E402  (registers chaos and repl on `app`)
