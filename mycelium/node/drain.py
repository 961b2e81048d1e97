"""Draining and stopping instances and apps: the agent's slow work, on a pool of its own.

A stop waits for the edge to drop the instance from its routes, then for requests in flight to
finish (up to the drain grace), then for the workload to exit (up to its stop grace): seconds,
which the agent's mailbox must never spend. Each stop is a task on :data:`STOPS`, a cached pool
(:class:`~supervisors.pool.WorkerPool`): its threads are reused from stop to stop and exit when
idle, so a quiet node keeps one. It is deliberately unbounded: a stop waits on other actors (the
edge, the app supervisor), and stopping 300 instances at once must take one grace, not 300/N of
them. Every task ends by calling ``done`` with whether the supervisor forgot the child, whatever
went wrong on the way, so the agent never forgets a child its supervisor still restarts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pykka

from mycelium._logger import get_logger
from mycelium.fabric.names import Names
from mycelium.fabric.switch import IsRouted
from mycelium.messages import Drain
from supervisors import (
    NotFound,
    SupervisorError,
    SupervisorNotRunning,
    delete_child,
    terminate_child,
    which_children,
)
from supervisors.pool import WorkerPool
from supervisors.singleton import Singleton

from .sockets import established, established_to, port_of

__all__ = ["ROUTE_ACK_TIMEOUT", "STOPS", "remove_app", "stop_instance", "wait_idle",
           "wait_idle_all", "wait_unrouted"]

log = get_logger(__name__)

ROUTE_ACK_TIMEOUT = 2.0
"""Seconds a draining instance waits for the edge to drop it from its routes."""

STOPS = Singleton(lambda: WorkerPool(keep_idle=1, name="mycelium-stop"))
"""The pool every drain-and-stop runs on (see the module's docstring for why it is unbounded);
built on first use and forgotten across ``fork``, as the other process-wide pools."""


def stop_instance(names: Names, app_sup: pykka.ActorRef[Any] | None, child: str,
                  url: str | None, grace: float, done: Callable[[bool], None]) -> None:
    """Drain ``child`` (routes first, then requests in flight if it served) and stop it.

    Runs on :data:`STOPS`. ``done(True)`` once the app supervisor no longer has the child (it
    was stopped and deleted, or the supervisor is gone with it), ``done(False)`` if it may still
    be there (the agent then keeps it and stops it again).
    """
    gone = app_sup is None
    try:
        if app_sup is not None:
            kid = next((k for k in which_children(app_sup) if k.id == child), None)
            if kid is not None and kid.ref is not None:
                # an instance that just failed on its own is dead already (its supervisor is
                # restarting it): it must still be terminated and deleted below
                _tell(kid.ref, Drain())
                if url is not None:
                    wait_unrouted(names, url, ROUTE_ACK_TIMEOUT)
                    if not wait_idle(names, url, grace):
                        log.info("%s: requests still in flight after %gs", child, grace)
            terminate_child(app_sup, child)
            delete_child(app_sup, child)
            gone = True
    except (NotFound, pykka.ActorDeadError):
        gone = True  # no such child any more, or its supervisor died and took it along
    except SupervisorNotRunning:
        gone = app_sup is None or not app_sup.is_alive()  # dead, or only slow to answer
    except Exception as exc:
        log.warning("stopping %s: %s (the agent tries again)", child, exc)
    finally:
        done(gone)


def remove_app(names: Names, apps_ref: pykka.ActorRef[Any] | None,
               app_sup: pykka.ActorRef[Any] | None, app: str, urls: list[str], grace: float,
               done: Callable[[], None]) -> None:
    """Drain every instance of ``app`` on a node, then stop its app supervisor.

    Runs on :data:`STOPS`; ``done()`` is called in every case.
    """
    try:
        if apps_ref is not None:
            # scaled down or stopped: leave the routes and let requests finish first
            for kid in which_children(app_sup) if app_sup is not None else ():
                if kid.ref is not None:
                    _tell(kid.ref, Drain())
            # every instance at once: one grace for the app, not one per instance (an app
            # leaving a node with 20 instances must not take 20 graces)
            deadline = time.monotonic() + ROUTE_ACK_TIMEOUT
            for url in urls:
                wait_unrouted(names, url, max(0.0, deadline - time.monotonic()))
            wait_idle_all(names, urls, grace)
            terminate_child(apps_ref, app)
    except (SupervisorError, pykka.ActorDeadError) as exc:
        log.info("removing %s: %s", app, exc)
    except Exception:
        log.exception("removing %s failed", app)
    finally:
        done()


def wait_idle(names: Names, url: str, timeout: float) -> bool:
    """Wait until no request is in flight to ``url`` (its port has no established connection).

    Each round asks the edge again (:class:`IsRouted`), which closes the keep-alive connections
    that requests finishing meanwhile handed back to its pool. False if the grace ran out.
    """
    port = port_of(url)
    if port is None:
        return False
    deadline = time.monotonic() + timeout
    while True:
        edge = names.get("edge")
        if edge is not None:
            with contextlib.suppress(Exception):
                edge.ask(IsRouted(url), timeout=1.0)
        if established(port) == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)  # polling the kernel's table: no event says a connection closed


def wait_idle_all(names: Names, urls: list[str], timeout: float) -> bool:
    """:func:`wait_idle` for several instances at once, within one ``timeout``."""
    ports = [p for p in (port_of(u) for u in urls) if p is not None]
    deadline = time.monotonic() + timeout
    asked = 0.0
    while ports:
        edge = names.get("edge")
        if edge is not None and time.monotonic() - asked >= 0.1:  # not 100 asks a second each
            asked = time.monotonic()
            for url in urls:  # each ask closes the pooled connections to that endpoint
                with contextlib.suppress(Exception):
                    edge.ask(IsRouted(url), timeout=1.0)
        if established_to(ports) == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def wait_unrouted(names: Names, url: str, timeout: float) -> bool:
    """Wait until the edge applied a routing table without ``url``; False if it never did.

    No edge (a member without one, or it is restarting) counts as applied: a restarted edge
    starts from the fabric's current table, which no longer holds a draining instance.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        edge = names.get("edge")
        if edge is None:
            return True
        try:
            if edge.ask(IsRouted(url), timeout=1.0) is False:
                return True
        except Exception:
            return True
        time.sleep(0.005)
    return False


def _tell(ref: Any, message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
