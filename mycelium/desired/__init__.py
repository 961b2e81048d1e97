"""Desired state in a file: ``mycelium plan``, ``apply`` and ``export``.

A TOML file of ``[apps.NAME]`` tables says what should run; :func:`load_file` validates all of
it, :func:`diff` (pure) compares it with the running mesh app by app and field by field, and
:mod:`.text` renders plans and exports. :class:`DesiredOps` is the mesh's side: the
``desired`` and ``apply`` control ops (one all-or-nothing batch, refused if the mesh moved
since the plan was computed). The CLI's side (packing, following rollouts) is in
:mod:`mycelium.cli.applying`.
"""

from __future__ import annotations

from .diff import AppChange, Change, diff, same_spore
from .errors import BadFile, DesiredError
from .file import DesiredFile, load_file
from .model import DesiredApp, RunningApp, Settings

__all__ = ["AppChange", "BadFile", "Change", "DesiredApp", "DesiredError", "DesiredFile",
           "RunningApp", "Settings", "diff", "load_file", "same_spore"]
