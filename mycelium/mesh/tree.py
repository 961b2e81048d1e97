"""The child specs of a mesh's supervision tree, from the configuration (pure: nothing starts).

```
mesh (one_for_one) ├ fabric ├ edge ├ control └ nodes (DynamicSupervisor)
   └ node-N (rest_for_one) ├ apps (DynamicSupervisor) └ agent
         apps └ <app> (one_for_one + backoff) └ <app>@node-N:<digest12>  (AppInstance)
```

``apps`` comes before ``agent`` under ``rest_for_one``: an agent crash restarts only the agent
(which adopts the running apps), while losing ``apps`` restarts the agent too, since its view
would be stale. Start order is fabric → edge → control → nodes, so shutdown (reverse order)
stops the workloads first and the fabric last; ``nodes`` is a DynamicSupervisor so that the
nodes drain their workloads in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from mycelium.edge import EdgeConfig
from mycelium.edge.actor import EdgeActor
from mycelium.fabric import Names
from mycelium.messages import AppFailed, AppRestarted
from mycelium.node.agent import Agent
from mycelium.node.isolation import Isolation
from mycelium.node.settings import NodeSettings
from mycelium.operator import MeshConfig
from mycelium.operator.config import ControlSection
from mycelium.operator.control import ControlActor
from supervisors import (
    Backoff,
    ChildSpec,
    DynamicSupervisor,
    Report,
    Supervisor,
    SupFlags,
    start_child,
)

from .sporesource import SporeSource

__all__ = ["APP_BACKOFF", "ROOT_FLAGS", "TreeBuilder", "node_settings"]

Reporter = Callable[[Report], None]
Op = Callable[[dict[str, Any]], Any]

#: The root's patience: more than 10 restarts of its children within 10 s and the mesh gives up.
ROOT_FLAGS = SupFlags("one_for_one", intensity=10, period=10.0)
#: An app supervisor that reached its restart intensity is restarted by ``apps`` after a
#: growing delay (1 s … 60 s): a crash-looping app keeps trying, ever more slowly, and never
#: escalates to the node or the mesh.
APP_BACKOFF = Backoff(base=1.0, cap=60.0, jitter=0.1, reset_after=120.0)


def node_settings(config: MeshConfig, isolation: Isolation | None = None) -> NodeSettings:
    """What every node agent of the mesh is given: its capacity and its instances' timings,
    and ``isolation`` (resolved from ``[node]`` for the home by the mesh)."""
    restart, inst = config.restart, config.instance
    return NodeSettings(
        cpu=config.node.cpu, mem_mb=config.node.mem_mb,
        health_interval=inst.health_interval, health_timeout=inst.health_timeout,
        health_failures=inst.health_failures, sample_interval=inst.mem_sample_interval,
        stop_grace=inst.stop_grace,
        backoff=Backoff(base=max(restart.backoff_base, 0.001),
                        cap=max(restart.backoff_cap, restart.backoff_base, 0.001),
                        jitter=restart.backoff_jitter, reset_after=restart.reset_after),
        host="127.0.0.1", startup_deadline=inst.startup_deadline,
        intensity=restart.intensity, period=restart.period,
        output_max_bytes=config.logs.output_max_mb * 1024 * 1024,
        output_files=config.logs.output_files, output_keep=config.logs.output_keep,
        exec_checks_parallel=config.node.exec_checks_parallel,
        isolation=isolation)


@dataclass(frozen=True, slots=True)
class TreeBuilder:
    """Builds the root's children.

    Attributes:
        names: The mesh's name registry.
        settings: Every node agent's settings (:func:`node_settings`).
        spores: Where agents get and unpack their spores.
        instances_dir: Where instances get their working directories.
        report: Every supervisor's reporter (the log sink).
        secrets: Opens an app's secrets for an instance being spawned (None: no secrets).
    """

    names: Names
    settings: NodeSettings
    spores: SporeSource
    instances_dir: Path
    report: Reporter
    secrets: Callable[[str], Mapping[str, bytes]] | None = None

    def children(self, fabric: ChildSpec, edge: EdgeConfig | None,
                 on_listening: Callable[[int], None], control_socket: Path,
                 ops: Mapping[str, Op], nodes: tuple[str, ...],
                 control: ControlSection) -> list[ChildSpec]:
        """``fabric``, ``edge`` (unless ``edge`` is None), ``control``, ``nodes``, in order.

        Args:
            fabric: The backend's fabric child.
            edge: The edge's configuration, None for no edge.
            on_listening: Called with the edge's bound port once it listens.
            control_socket: Where the control socket listens.
            ops: The control socket's op table.
            nodes: The node agents, in start order.
            control: The control socket's bounds.
        """
        names = self.names
        node_specs = [self.node_spec(n) for n in nodes]
        report = self.report

        def start_nodes() -> pykka.ActorRef[Any]:
            # a DynamicSupervisor stops its children concurrently: the nodes drain their
            # workloads in parallel on shutdown instead of one node after the other
            ref = DynamicSupervisor.start(path="mesh/nodes", reporter=report,
                                          intensity=10, period=10.0)
            for spec in node_specs:
                start_child(ref, spec)
            return ref

        children = [fabric]
        if edge is not None:
            children.append(ChildSpec("edge", lambda: EdgeActor.start(names, edge, on_listening,
                                                                      report), shutdown=10.0))
        children += [ChildSpec("control", lambda: ControlActor.start(
                         names, control_socket, ops, max_connections=control.max_connections,
                         idle_timeout=control.idle_timeout)),
                     ChildSpec("nodes", start_nodes, type="supervisor")]
        return children

    def node_spec(self, node: str) -> ChildSpec:
        """``node`` (rest_for_one) with its ``apps`` and its ``agent``."""
        names, report, settings, spores = self.names, self.report, self.settings, self.spores
        instances, secrets = self.instances_dir, self.secrets

        def apps_reporter(rep: Report) -> None:
            report(rep)
            # an app supervisor that reached its intensity exits shutdown (as in OTP), with
            # the cause in the report's extra
            if rep.event == "child_terminated" and (
                    rep.reason not in (None, "normal", "shutdown") or "cause" in rep.extra):
                names.tell(node, AppFailed(str(rep.child),
                                           str(rep.extra.get("cause", rep.reason))))
            elif rep.event == "child_restarted":
                names.tell(node, AppRestarted(str(rep.child)))

        def start_apps() -> pykka.ActorRef[Any]:
            ref = DynamicSupervisor.start(path=f"mesh/nodes/{node}/apps",
                                          reporter=apps_reporter, backoff=APP_BACKOFF,
                                          intensity=1000, period=1.0)
            names.register(f"{node}/apps", ref)
            return ref

        def start_agent() -> pykka.ActorRef[Any]:
            return Agent.start(node, names, settings, spores.info, spores.extract, instances,
                               report, secrets=secrets)

        children = [ChildSpec("apps", start_apps, type="supervisor"),
                    ChildSpec("agent", start_agent)]
        return ChildSpec(node, lambda: Supervisor.start(
            SupFlags("rest_for_one", intensity=10, period=10.0), children,
            path=f"mesh/nodes/{node}", reporter=report), type="supervisor")
