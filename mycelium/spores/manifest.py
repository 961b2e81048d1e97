"""The spore manifest: validation of every field, and its canonical (signed) JSON form.

The input manifest a user writes has ``name``, ``version`` and optional ``health``, ``args``,
``env``, ``warmup`` and ``checks`` (:mod:`.checks`); ``pack`` adds ``binary_sha256``,
``binary_size``, ``created_at``, ``signer`` and ``signature``. Each field has its own check
with a precise reason, like OTP's child-spec validation, so a bad manifest never reaches a node.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .checks import CheckSpec, parse_checks
from .errors import ManifestError

__all__ = [
    "INPUT_KEYS",
    "SIGNED_KEYS",
    "Manifest",
    "canonical_json",
    "load_input_manifest",
    "parse_input_manifest",
    "parse_spore_manifest",
]

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
HEX128_RE = re.compile(r"[0-9a-f]{128}")
CREATED_AT_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")

INPUT_KEYS = frozenset({"name", "version", "health", "args", "env", "warmup", "checks",
                        "env_secrets"})
OPTIONAL_KEYS = frozenset({"checks", "env_secrets"})
"""Written into a spore only when set, so that spores made before they existed keep verifying."""
PACK_KEYS = frozenset({"binary_sha256", "binary_size", "created_at", "signer", "signature"})
SIGNED_KEYS = INPUT_KEYS | PACK_KEYS
MAX_WARMUP = 86_400.0
MAX_ARGS = 1024
MAX_ENV = 1024
MAX_STR = 4096
RESERVED_ENV = frozenset({"PORT"})
SECRET_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
RESERVED_SECRET_ENV = frozenset({"PORT", "CREDENTIALS_DIRECTORY", "PATH", "HOME", "TMPDIR"})


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest. ``env`` is a read-only mapping; the pack fields are empty ("")
    until the manifest has been packed and signed.
    """

    name: str
    version: str
    health: str = "/health"
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    warmup: float = 0.0
    checks: tuple[CheckSpec, ...] = ()
    env_secrets: tuple[str, ...] = ()
    binary_sha256: str = ""
    binary_size: int = 0
    created_at: str = ""
    signer: str = ""
    signature: str = ""

    @property
    def signed(self) -> bool:
        """True once pack has filled in the binary's hash, the signer and the signature."""
        return bool(self.signature)

    def to_dict(self, *, with_signature: bool = True) -> dict[str, Any]:
        """The manifest as plain JSON data (every field explicit, as written into a spore)."""
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "health": self.health,
            "args": list(self.args),
            "env": dict(self.env),
            "warmup": self.warmup,
        }
        if self.checks:
            data["checks"] = [c.to_dict() for c in self.checks]
        if self.env_secrets:
            data["env_secrets"] = list(self.env_secrets)
        if self.signer or self.binary_sha256:
            data.update(binary_sha256=self.binary_sha256, binary_size=self.binary_size,
                        created_at=self.created_at, signer=self.signer)
        if with_signature and self.signature:
            data["signature"] = self.signature
        return data


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the exact bytes that are signed and stored."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _load_object(raw: bytes, in_spore: bool) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise ManifestError(f"manifest: duplicate key {key!r}", in_spore=in_spore)
            obj[key] = value
        return obj

    def no_constant(name: str) -> Any:
        raise ManifestError(f"manifest: {name} is not valid JSON", in_spore=in_spore)

    try:
        text = raw.decode("utf-8")
        data = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest: not UTF-8 ({exc.reason})", in_spore=in_spore) from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest: invalid JSON ({exc.msg} at line {exc.lineno} "
                            f"column {exc.colno})", in_spore=in_spore) from exc
    except RecursionError as exc:
        raise ManifestError("manifest: nested too deeply", in_spore=in_spore) from exc
    if not isinstance(data, dict):
        raise ManifestError(f"manifest: must be a JSON object, got {type(data).__name__}",
                            in_spore=in_spore)
    return data


def _text(value: object, key: str, in_spore: bool) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"manifest: {key} must be a string, got {_kind(value)}",
                            in_spore=in_spore)
    if len(value) > MAX_STR:
        raise ManifestError(f"manifest: {key} is longer than {MAX_STR} characters",
                            in_spore=in_spore)
    if "\x00" in value:
        raise ManifestError(f"manifest: {key} contains a NUL character", in_spore=in_spore)
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _validate_input_fields(data: Mapping[str, Any], in_spore: bool) -> dict[str, Any]:
    """Check the user-written fields; return them normalised (defaults filled in)."""
    for key in ("name", "version"):
        if key not in data:
            raise ManifestError(f"manifest: missing required key {key!r}", in_spore=in_spore)
    name = _text(data["name"], "name", in_spore)
    if not NAME_RE.fullmatch(name):
        raise ManifestError(f"manifest: name {name!r} must match ^[a-z0-9][a-z0-9-]{{0,62}}$",
                            in_spore=in_spore)
    version = _text(data["version"], "version", in_spore)
    if not VERSION_RE.fullmatch(version):
        raise ManifestError(f"manifest: version {version!r} must be 1-128 characters of "
                            "letters, digits and ._+~- (starting with a letter or digit)",
                            in_spore=in_spore)
    health = _text(data.get("health", "/health"), "health", in_spore)
    if not health.startswith("/") or any(c.isspace() or ord(c) < 32 or ord(c) == 127
                                         for c in health):
        raise ManifestError(f"manifest: health {health!r} must be a path starting with '/' "
                            "without spaces or control characters", in_spore=in_spore)
    args_raw = data.get("args", [])
    if not isinstance(args_raw, list):
        raise ManifestError(f"manifest: args must be a list of strings, got {_kind(args_raw)}",
                            in_spore=in_spore)
    if len(args_raw) > MAX_ARGS:
        raise ManifestError(f"manifest: more than {MAX_ARGS} args", in_spore=in_spore)
    args = tuple(_text(a, f"args[{i}]", in_spore) for i, a in enumerate(args_raw))
    env_raw = data.get("env", {})
    if not isinstance(env_raw, dict):
        raise ManifestError(f"manifest: env must be an object of strings, got {_kind(env_raw)}",
                            in_spore=in_spore)
    if len(env_raw) > MAX_ENV:
        raise ManifestError(f"manifest: more than {MAX_ENV} env entries", in_spore=in_spore)
    env: dict[str, str] = {}
    for key, value in env_raw.items():
        if not ENV_KEY_RE.fullmatch(key):
            raise ManifestError(f"manifest: env key {key!r} is not a valid variable name",
                                in_spore=in_spore)
        if key in RESERVED_ENV or key.startswith("MYCELIUM_"):
            raise ManifestError(f"manifest: env key {key!r} is set by the mesh",
                                in_spore=in_spore)
        env[key] = _text(value, f"env[{key!r}]", in_spore)
    warmup = data.get("warmup", 0.0)
    if isinstance(warmup, bool) or not isinstance(warmup, int | float):
        raise ManifestError(f"manifest: warmup must be a number of seconds, got {_kind(warmup)}",
                            in_spore=in_spore)
    if not math.isfinite(warmup) or not 0 <= warmup <= MAX_WARMUP:
        raise ManifestError(f"manifest: warmup must be between 0 and {MAX_WARMUP:g} seconds, "
                            f"got {warmup!r}", in_spore=in_spore)
    checks = parse_checks(data["checks"], health, in_spore=in_spore) if "checks" in data else ()
    return {"name": name, "version": version, "health": health, "args": args, "env": env,
            "warmup": float(warmup), "checks": checks,
            "env_secrets": _env_secrets(data, env, in_spore)}


def _env_secrets(data: Mapping[str, Any], env: Mapping[str, str],
                 in_spore: bool) -> tuple[str, ...]:
    """The optional ``env_secrets``: secret names also given as environment variables."""
    raw = data.get("env_secrets", [])
    if not isinstance(raw, list):
        raise ManifestError(f"manifest: env_secrets must be a list of secret names, got "
                            f"{_kind(raw)}", in_spore=in_spore)
    if len(raw) > MAX_ENV:
        raise ManifestError(f"manifest: more than {MAX_ENV} env_secrets", in_spore=in_spore)
    names: list[str] = []
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not SECRET_NAME_RE.fullmatch(name):
            raise ManifestError(f"manifest: env_secrets[{i}] {name!r} must match "
                                "^[A-Z_][A-Z0-9_]{0,63}$", in_spore=in_spore)
        if name in RESERVED_SECRET_ENV or name.startswith("MYCELIUM_"):
            raise ManifestError(f"manifest: env_secrets[{i}] {name!r} is set by the mesh",
                                in_spore=in_spore)
        if name in env:
            raise ManifestError(f"manifest: {name!r} is in both env and env_secrets",
                                in_spore=in_spore)
        if name in names:
            raise ManifestError(f"manifest: env_secrets lists {name!r} twice", in_spore=in_spore)
        names.append(name)
    return tuple(names)


def parse_input_manifest(raw: bytes | Mapping[str, Any]) -> Manifest:
    """Validate a manifest written by a user (``pack --manifest FILE``).

    Raises:
        ManifestError: (exit 2) not a JSON object, a missing or unknown key, or a bad field.
    """
    data = _load_object(raw, False) if isinstance(raw, bytes | bytearray) else dict(raw)
    for key in sorted(data):
        if key in PACK_KEYS:
            raise ManifestError(f"manifest: key {key!r} is added by pack; remove it")
        if key not in INPUT_KEYS:
            raise ManifestError(f"manifest: unknown key {key!r}")
    fields = _validate_input_fields(data, False)
    return Manifest(name=fields["name"], version=fields["version"], health=fields["health"],
                    args=fields["args"], env=MappingProxyType(fields["env"]),
                    warmup=fields["warmup"], checks=fields["checks"],
                    env_secrets=fields["env_secrets"])


def load_input_manifest(source: Manifest | Mapping[str, Any] | Path | str) -> Manifest:
    """An input manifest from a :class:`Manifest`, its JSON data, or a JSON file.

    Raises:
        ManifestError: (exit 2) unreadable or invalid.
    """
    if isinstance(source, Manifest):
        data = source.to_dict(with_signature=False)
        return parse_input_manifest({k: v for k, v in data.items() if k in INPUT_KEYS})
    if isinstance(source, Path | str):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
        return parse_input_manifest(raw)
    return parse_input_manifest(source)


def parse_spore_manifest(raw: bytes) -> tuple[Manifest, dict[str, Any]]:
    """Validate the ``manifest.json`` found inside a spore (signature not checked here).

    Returns:
        The manifest and the raw JSON object (what the signature covers, minus ``signature``).

    Raises:
        ManifestError: (exit 1) not canonical JSON, a missing or unknown key, or a bad field.
    """
    data = _load_object(raw, True)
    for key in sorted(data):
        if key not in SIGNED_KEYS:
            raise ManifestError(f"manifest: unknown key {key!r}", in_spore=True)
    if "signature" not in data:
        raise ManifestError("manifest: missing signature (spore is not signed)", in_spore=True)
    for key in sorted(SIGNED_KEYS - {"signature"} - OPTIONAL_KEYS):
        if key not in data:
            raise ManifestError(f"manifest: missing key {key!r}", in_spore=True)
    if canonical_json(data) != raw:
        raise ManifestError("manifest: manifest.json is not in canonical form", in_spore=True)
    fields = _validate_input_fields(data, True)
    sha = data["binary_sha256"]
    if not isinstance(sha, str) or not HEX64_RE.fullmatch(sha):
        raise ManifestError("manifest: binary_sha256 must be 64 lowercase hex characters",
                            in_spore=True)
    size = data["binary_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"manifest: binary_size must be an integer >= 0, got {size!r}",
                            in_spore=True)
    created = data["created_at"]
    if not isinstance(created, str) or not CREATED_AT_RE.fullmatch(created):
        raise ManifestError("manifest: created_at must be an RFC 3339 UTC timestamp",
                            in_spore=True)
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ManifestError(f"manifest: created_at {created!r} is not a valid date",
                            in_spore=True) from exc
    signer = data["signer"]
    if not isinstance(signer, str) or not HEX64_RE.fullmatch(signer):
        raise ManifestError("manifest: signer must be a public key (64 lowercase hex)",
                            in_spore=True)
    signature = data["signature"]
    if not isinstance(signature, str) or not HEX128_RE.fullmatch(signature):
        raise ManifestError("manifest: signature must be 128 lowercase hex characters",
                            in_spore=True)
    manifest = Manifest(name=fields["name"], version=fields["version"], health=fields["health"],
                        args=fields["args"], env=MappingProxyType(fields["env"]),
                        warmup=fields["warmup"], checks=fields["checks"],
                        env_secrets=fields["env_secrets"],
                        binary_sha256=sha, binary_size=size,
                        created_at=created, signer=signer, signature=signature)
    return manifest, data
