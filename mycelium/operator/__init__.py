"""Operating a mesh: its configuration file and its supervision log.

``config`` loads every tunable (defaults < TOML file < ``MYCELIUM_<SECTION>_<KEY>``);
``logs`` writes, reads, follows and renders the supervision log (docs/reference.md#supervision-log).

The names are resolved on first use (PEP 562), so importing a light submodule such as
:mod:`mycelium.operator.client` does not load the config and log machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mycelium.operator.config import ConfigError, MeshConfig, load_config
    from mycelium.operator.logs import (
        LogError,
        SupervisionLog,
        format_record,
        normalise_record,
    )

__all__ = [
    "ConfigError",
    "LogError",
    "MeshConfig",
    "SupervisionLog",
    "format_record",
    "load_config",
    "normalise_record",
]

_HOMES = {
    "ConfigError": "config", "MeshConfig": "config", "load_config": "config",
    "LogError": "logs", "SupervisionLog": "logs", "format_record": "logs",
    "normalise_record": "logs",
}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"mycelium.operator.{module}"), name)
