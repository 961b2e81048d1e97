"""OTP-style supervision for Pykka actors.

Generic (it never imports mycelium): :class:`ChildSpec`/:class:`SupFlags` describe a tree,
:class:`Supervisor` and :class:`DynamicSupervisor` run it, workers subclass
:class:`SupervisedActor`, and every event is a :class:`Report`.
"""

from __future__ import annotations

import logging

from supervisors.actor import Exit, Latch, SupervisedActor
from supervisors.api import (
    count_children,
    delete_child,
    get_childspec,
    restart_child,
    start_child,
    terminate_child,
    wait_exit,
    which_children,
)
from supervisors.dynamic import DynamicSupervisor
from supervisors.errors import (
    AlreadyPresent,
    AlreadyStarted,
    MaxChildren,
    NotFound,
    Restarting,
    Running,
    SpecError,
    StartError,
    SupervisorError,
    SupervisorNotRunning,
)
from supervisors.messages import ChildInfo
from supervisors.reports import Report, format_report
from supervisors.spec import Backoff, ChildSpec, SupFlags, check_specs
from supervisors.supervisor import Supervisor
from supervisors.tree import describe_tree

__all__ = [
    "AlreadyPresent",
    "AlreadyStarted",
    "Backoff",
    "ChildInfo",
    "ChildSpec",
    "DynamicSupervisor",
    "Exit",
    "Latch",
    "MaxChildren",
    "NotFound",
    "Report",
    "Restarting",
    "Running",
    "SpecError",
    "StartError",
    "SupFlags",
    "SupervisedActor",
    "Supervisor",
    "SupervisorError",
    "SupervisorNotRunning",
    "check_specs",
    "count_children",
    "delete_child",
    "describe_tree",
    "format_report",
    "get_childspec",
    "restart_child",
    "start_child",
    "terminate_child",
    "wait_exit",
    "which_children",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
