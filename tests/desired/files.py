"""Writing desired-state files and manifests for the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = EXAMPLES / "hello" / "hello"
CRASHY = EXAMPLES / "crashy" / "crashy"

__all__ = ["CRASHY", "EXAMPLES", "HELLO", "manifest", "table", "write"]


def manifest(directory: Path, name: str, version: str = "1.0.0", **fields: Any) -> Path:
    """A manifest file ``<directory>/<name>-<version>.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}.json"
    path.write_text(json.dumps({"name": name, "version": version, **fields}))
    return path


def table(name: str, binary: Path, manifest_path: Path, **settings: Any) -> str:
    """One ``[apps.NAME]`` table of binary + manifest with the given settings."""
    lines = [f"[apps.{name}]", f"binary = {json.dumps(str(binary))}",
             f"manifest = {json.dumps(str(manifest_path))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def write(path: Path, *tables: str) -> Path:
    """A file of these tables."""
    path.write_text("\n".join(tables))
    return path
