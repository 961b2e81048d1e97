"""Builders for the spore tests: signed canonical spores with chosen flaws, hostile zips, and
a way to run the real CLI (in-process through its entry point, or as a subprocess)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from mycelium.cli import main as cli_main
from mycelium.spores import canonical_json
from mycelium.spores.archive import binary_header, manifest_header, trailer

REG = (stat.S_IFREG | 0o644) << 16


@dataclass(frozen=True)
class CliResult:
    """Exit code and captured output of one CLI run."""

    code: int
    out: str
    err: str


def run_cli(*args: str | Path) -> CliResult:
    """Run ``mycelium ARGS`` through its real entry point in this process (fast)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            cli_main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return CliResult(code, out.getvalue(), err.getvalue())


def run_mycelium(*args: str | Path, timeout: float = 30) -> CliResult:
    """Run ``mycelium ARGS`` as a real OS process."""
    env = {k: v for k, v in os.environ.items() if k not in ("MYCELIUM_HOME", "MYCELIUM_DEBUG")}
    proc = subprocess.run([sys.executable, "-m", "mycelium", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_error(result: CliResult, code: int, *needles: str) -> str:
    """The run failed with ``code`` and exactly one ``error:`` line (no traceback)."""
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def signed_manifest(key: SigningKey, binary: bytes, *, sign_with: SigningKey | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """A manifest dict for ``binary`` signed by ``sign_with`` (default ``key``).

    Overrides are applied before signing; an override value of ``...`` removes the key.
    """
    import hashlib

    data: dict[str, Any] = {
        "name": "hello", "version": "1.0.0", "health": "/health", "args": [], "env": {},
        "warmup": 0.0, "binary_sha256": hashlib.sha256(binary).hexdigest(),
        "binary_size": len(binary), "created_at": "2026-01-01T00:00:00Z",
        "signer": bytes(key.verify_key).hex(),
    }
    for k, v in overrides.items():
        if v is ...:
            data.pop(k, None)
        else:
            data[k] = v
    signer = sign_with or key
    data["signature"] = signer.sign(canonical_json(data)).signature.hex()
    return data


def write_canonical(path: Path, manifest_bytes: bytes, binary: bytes) -> Path:
    """Write a spore in the canonical layout with exactly these entry contents."""
    m_crc, b_crc = zlib.crc32(manifest_bytes), zlib.crc32(binary)
    path.write_bytes(manifest_header(m_crc, len(manifest_bytes)) + manifest_bytes
                     + binary_header(b_crc, len(binary)) + binary
                     + trailer(m_crc, len(manifest_bytes), b_crc, len(binary)))
    return path


def write_spore(path: Path, key: SigningKey, binary: bytes, **overrides: Any) -> Path:
    """A canonical spore whose manifest is signed after ``overrides`` were applied."""
    return write_canonical(path, canonical_json(signed_manifest(key, binary, **overrides)),
                           binary)


@dataclass(frozen=True)
class Entry:
    """One entry of a hand-built (possibly hostile) zip."""

    name: str
    data: bytes
    attr: int = REG
    method: int = zipfile.ZIP_STORED
    create_system: int = 3
    flags: int = 0


def write_zip(path: Path, entries: Sequence[Entry]) -> Path:
    """A zip written by the standard library, entries exactly as given (duplicates too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as zf:
            for e in entries:
                info = zipfile.ZipInfo(e.name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = e.attr
                info.compress_type = e.method
                info.create_system = e.create_system
                info.flag_bits |= e.flags
                zf.writestr(info, e.data)
    return path


def repo_listing(repo: Path) -> dict[str, bytes]:
    """Every file in the repo (hidden temp files included) with its content."""
    if not repo.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(repo.iterdir())}


def manifest_entries(manifest: Mapping[str, Any], binary: bytes) -> list[Entry]:
    """The two regular entries of a spore, as a stdlib zip would hold them."""
    return [Entry("manifest.json", canonical_json(manifest)), Entry("binary", binary)]
