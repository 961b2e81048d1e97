"""Flow A end to end: pack (if needed), verify, put into the home's repo."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mycelium.home import Home

from .errors import SporeInputError
from .keys import load_signing_key, load_trusted
from .limits import Limits
from .manifest import Manifest
from .repo import Repo
from .spore import pack

__all__ = ["publish"]


def publish(home: Home, *, binary: Path | str | None = None,
            manifest: Manifest | Mapping[str, Any] | Path | str | None = None,
            key: str = "default", spore: Path | str | None = None,
            limits: Limits | None = None) -> str:
    """Publish a binary+manifest (packed and signed with ``key``) or a ready spore.

    The spore is written or copied into a temp file inside the repo, verified there against
    the home's trusted signers, and only then renamed to ``<digest>.spore``: on any failure the
    repo is unchanged.

    Returns:
        The digest (64 lowercase hex characters).

    Raises:
        SporeInputError: Neither or both of (binary, manifest) and spore were given.
        KeyFileError: The signing key is missing or unsafe.
        ManifestError: The input manifest is invalid (exit 2).
        SporeError: Verification failed (exit 1).
    """
    limits = limits or Limits()
    home.ensure()
    repo = Repo(home.repo)
    trusted = load_trusted(home)
    if spore is not None:
        if binary is not None or manifest is not None:
            raise SporeInputError("give either BINARY --manifest FILE or --spore FILE, not both")
        return repo.put(spore, trusted, limits)
    if binary is None or manifest is None:
        raise SporeInputError("publish needs BINARY and --manifest FILE, or --spore FILE")
    signing_key = load_signing_key(home, key)
    repo.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    repo.remove_stale_partials()
    fd, name = tempfile.mkstemp(prefix=".pack-", suffix=".partial", dir=repo.root)
    os.close(fd)
    tmp = Path(name)
    try:
        packed = pack(binary, manifest, signing_key, tmp, limits=limits)
        return repo.adopt(tmp, trusted, limits, digest=packed.digest)
    finally:
        tmp.unlink(missing_ok=True)
