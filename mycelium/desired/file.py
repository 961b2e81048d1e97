"""Read and validate a desired-state file: one ``[apps.NAME]`` TOML table per app.

Everything is checked before anything is done with the file — TOML syntax, unknown keys, app
names, numbers, binaries, manifests (their ``name`` must be the table's), digests, secrets —
and the first problem is one :class:`BadFile` naming the file, the line and the key. Nothing
is packed or written here: a binary is identified by its sha256, which is what the running
spore's signed manifest records, so comparing needs no spore.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mycelium.fabric.validate import APP_NAME

from .errors import BadFile
from .locate import LineIndex
from .model import DEFAULTS, MANIFEST_KEYS, SETTING_KEYS, DesiredApp, Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mycelium.spores import Limits, Manifest

__all__ = ["APP_KEYS", "DesiredFile", "SporeLookup", "load_file", "no_secret_store"]

APP_KEYS = ("binary", "manifest", "digest", *SETTING_KEYS, "hosts", "secrets", "env_secrets",
            "canary")
"""Every key an ``[apps.NAME]`` table may hold."""

SECRET_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
HOST_NAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}"
                       r"[a-z0-9])?)*$")
CANARY_KEYS = ("instances", "weight", "auto_promote")

SporeLookup = Callable[[str], "tuple[str, Manifest]"]
"""Resolves a ``digest`` (or unique prefix) to the full digest and its verified manifest."""


def no_secret_store(_app: str, _name: str) -> bool:
    """This mesh has no secret store yet: no secret exists."""
    return False


@dataclass(frozen=True, slots=True)
class DesiredFile:
    """A validated file: its apps in file order."""

    path: Path
    apps: tuple[DesiredApp, ...]

    def names(self) -> list[str]:
        """The apps' names, in file order."""
        return [a.name for a in self.apps]


def load_file(path: Path, spore: SporeLookup, limits: Limits,
              secret_exists: Callable[[str, str], bool] = no_secret_store) -> DesiredFile:
    """Read and validate ``path`` completely.

    Args:
        path: The TOML file.
        spore: Looks up the spore of a ``digest = …`` table (the home's repo).
        limits: Spore size limits (a binary over ``max_binary_bytes`` is refused here).
        secret_exists: Whether app's secret NAME exists.

    Raises:
        BadFile: the first problem found (exit 2).
    """
    shown = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise BadFile(shown, None, None, "no such file") from None
    except OSError as exc:
        raise BadFile(shown, None, None, f"cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadFile(shown, None, None, "not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadFile(shown, _toml_line(str(exc)), None, f"bad TOML: {exc}") from None
    index = LineIndex(text)
    reader = _Reader(shown, path.absolute().parent, index, spore, limits, secret_exists)
    for key in data:
        if key != "apps":
            raise BadFile(shown, index.line(key), key, "unknown key (a desired-state file "
                          "holds [apps.NAME] tables only)")
    apps = data.get("apps", {})
    if not isinstance(apps, dict):
        raise BadFile(shown, index.line("apps"), "apps", "must be a table of [apps.NAME] tables")
    return DesiredFile(path, tuple(reader.app(name, table) for name, table in apps.items()))


def _toml_line(message: str) -> int | None:
    found = re.search(r"at line (\d+)", message)
    return int(found.group(1)) if found else None


class _Reader:
    """Validates one table at a time; every failure names the key and its line."""

    def __init__(self, shown: str, base: Path, index: LineIndex, spore: SporeLookup,
                 limits: Limits, secret_exists: Callable[[str, str], bool]) -> None:
        self.shown = shown
        self.base = base
        self.index = index
        self.spore = spore
        self.limits = limits
        self.secret_exists = secret_exists

    def fail(self, app: str, key: str | None, reason: str) -> BadFile:
        path = ("apps", app) if key is None else ("apps", app, key)
        return BadFile(self.shown, self.index.line(*path), ".".join(path), reason)

    def app(self, name: str, table: object) -> DesiredApp:
        if not APP_NAME.match(name):
            raise self.fail(name, None, "bad app name: expected ^[a-z0-9][a-z0-9-]{0,62}$")
        if not isinstance(table, dict):
            raise self.fail(name, None, "must be a table")
        for key in table:
            if key not in APP_KEYS:
                raise self.fail(name, key, f"unknown key (known: {', '.join(sorted(APP_KEYS))})")
        has_binary = "binary" in table or "manifest" in table
        if has_binary == ("digest" in table):
            raise self.fail(name, None, "needs exactly one of binary + manifest, or digest")
        if has_binary:
            for key in ("binary", "manifest"):
                if key not in table:
                    raise self.fail(name, None, f"binary and manifest go together: {key} is "
                                    "missing")
            manifest, binary, sha, size = self._source(name, table)
            digest, manifest_path = None, self._path(name, table, "manifest")
        else:
            digest, signed = self._digest(name, table)
            manifest = {k: v for k, v in signed.to_dict().items() if k in MANIFEST_KEYS}
            binary, manifest_path = None, None
            sha, size = signed.binary_sha256, signed.binary_size
        settings = self._settings(name, table, float(manifest["warmup"]))
        settings = replace(settings, hosts=self._hosts_and_secrets(name, table))
        canary = self._canary(name, table.get("canary", 0))
        return DesiredApp(name=name, settings=settings, manifest=manifest, binary_sha256=sha,
                          binary_size=size, digest=digest, binary=binary, canary=canary,
                          manifest_path=manifest_path, line=self.index.line("apps", name),
                          given=frozenset(k for k in SETTING_KEYS if k in table),
                          env_secrets=tuple(dict.fromkeys(table.get("env_secrets", []))))

    # -- where the spore comes from -------------------------------------------------------

    def _path(self, app: str, table: Mapping[str, Any], key: str) -> Path:
        raw = table[key]
        if not isinstance(raw, str) or not raw:
            raise self.fail(app, key, "must be a path (a string)")
        # normalised, not resolved: symlinks stay as written, and no syscall per path
        return Path(os.path.normpath(self.base / os.path.expanduser(raw)))

    def _source(self, app: str, table: Mapping[str, Any]
                ) -> tuple[dict[str, Any], Path, str, int]:
        from mycelium.spores import ManifestError, load_input_manifest

        manifest_path = self._path(app, table, "manifest")
        try:
            manifest = load_input_manifest(manifest_path)
        except ManifestError as exc:
            raise self.fail(app, "manifest", f"{manifest_path}: {exc}") from None
        if manifest.name != app:
            raise self.fail(app, "manifest", f"{manifest_path} is app {manifest.name!r}, not "
                            f"{app!r} (its name must be the table's)")
        binary = self._path(app, table, "binary")
        try:
            with open(binary, "rb") as f:
                st = os.fstat(f.fileno())
                if not _regular(st.st_mode):
                    raise self.fail(app, "binary", f"{binary} is not a regular file")
                if st.st_size > self.limits.max_binary_bytes:
                    raise self.fail(app, "binary", f"{binary} is {st.st_size} bytes, over the "
                                    f"limit of {self.limits.max_binary_bytes} bytes")
                sha = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            raise self.fail(app, "binary", f"no such file: {binary}") from None
        except IsADirectoryError:
            raise self.fail(app, "binary", f"{binary} is not a regular file") from None
        except OSError as exc:
            raise self.fail(app, "binary", f"cannot read {binary}: {exc.strerror}") from None
        data = manifest.to_dict(with_signature=False)
        return {k: data[k] for k in MANIFEST_KEYS if k in data}, binary, sha, st.st_size

    def _digest(self, app: str, table: Mapping[str, Any]) -> tuple[str, Manifest]:
        from mycelium.errors import MyceliumError

        raw = table["digest"]
        if not isinstance(raw, str):
            raise self.fail(app, "digest", "must be a digest (64 hex characters, a string)")
        try:
            digest, manifest = self.spore(raw)
        except MyceliumError as exc:
            raise self.fail(app, "digest", str(exc)) from None
        if manifest.name != app:
            raise self.fail(app, "digest", f"spore {digest[:12]} is app {manifest.name!r}, not "
                            f"{app!r}")
        return digest, manifest

    # -- settings -------------------------------------------------------------------------

    def _settings(self, app: str, table: Mapping[str, Any], manifest_warmup: float) -> Settings:
        def number(key: str, default: Any, *, integer: bool, minimum: float,
                   strict: bool = False) -> Any:
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or (
                    integer and not isinstance(value, int)):
                kind = "an integer" if integer else "a number"
                raise self.fail(app, key, f"must be {kind}, got {_shown(value)}")
            if not math.isfinite(value) or value < minimum or (strict and value <= minimum):
                sign = ">" if strict else ">="
                raise self.fail(app, key, f"must be {sign} {minimum:g}, got {_shown(value)}")
            return value if integer else float(value)

        n_min = number("min", DEFAULTS["min"], integer=True, minimum=0)
        n_max = number("max", DEFAULTS["max"], integer=True, minimum=1)
        if n_min > n_max:
            raise self.fail(app, "min" if "min" in table else "max",
                            f"min {n_min} is greater than max {n_max}")
        return Settings(
            min=n_min, max=n_max,
            max_instances=number("max_instances", n_max, integer=True, minimum=1),
            cpu=number("cpu", DEFAULTS["cpu"], integer=False, minimum=0),
            mem=number("mem", DEFAULTS["mem"], integer=True, minimum=1),
            warmup=number("warmup", manifest_warmup, integer=False, minimum=0),
            timeout=number("timeout", DEFAULTS["timeout"], integer=False, minimum=0,
                           strict=True))

    # -- keys whose features belong to other parts of the mesh ------------------------------

    def _names(self, app: str, table: Mapping[str, Any], key: str, pattern: re.Pattern[str],
               what: str) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(app, key, f"must be a list of {what}s (strings)")
        for item in value:
            if not pattern.match(item):
                raise self.fail(app, key, f"bad {what} {item!r}: expected {pattern.pattern}")
        return list(value)

    def _hosts_and_secrets(self, app: str, table: Mapping[str, Any]) -> tuple[str, ...]:
        """Check the secrets the app names exist; return its host names (sorted, unique)."""
        hosts = self._names(app, table, "hosts", HOST_NAME, "host name")
        secrets = self._names(app, table, "secrets", SECRET_NAME, "secret name")
        env_secrets = self._names(app, table, "env_secrets", SECRET_NAME, "secret name")
        for key, names in (("secrets", secrets), ("env_secrets", env_secrets)):
            for name in names:
                if not self.secret_exists(app, name):
                    raise self.fail(app, key, f"secret {name!r} does not exist (set it "
                                    f"first: mycelium secret set {app} {name})")
        return tuple(sorted({h.rstrip(".") for h in hosts}))

    def _canary(self, app: str, value: object) -> tuple[int, int, float]:
        """``(instances, weight, auto_promote)`` from ``N`` or ``{instances, weight,
        auto_promote}``: instances 0 is no canary, weight 0 (absent) their share by count,
        auto_promote 0 never."""
        weight: object = 0
        promote: object = 0
        if isinstance(value, dict):
            for key in value:
                if key not in CANARY_KEYS:
                    raise self.fail(app, "canary", f"unknown key {key!r} (known: "
                                    f"{', '.join(CANARY_KEYS)})")
            weight = value.get("weight", 0)
            promote = value.get("auto_promote", 0)
            if "weight" in value and (isinstance(weight, bool) or not isinstance(weight, int)
                                      or not 1 <= weight <= 99):
                raise self.fail(app, "canary",
                                f"weight must be an integer 1-99, got {_shown(weight)}")
            if isinstance(promote, bool) or not isinstance(promote, int | float) or not (
                    math.isfinite(promote) and promote >= 0):
                raise self.fail(app, "canary", f"auto_promote must be seconds >= 0, got "
                                f"{_shown(promote)}")
            value = value.get("instances", 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(app, "canary", f"must be an instance count >= 0 or a table "
                            f"{{instances, weight, auto_promote}}, got {_shown(value)}")
        assert isinstance(weight, int) and isinstance(promote, int | float)
        return (value, weight, float(promote)) if value else (0, 0, 0.0)


def _shown(value: object) -> str:
    """A value as the TOML file spells it (``true``, ``"x"``, ``1.5``)."""
    import json

    if isinstance(value, bool | str):
        return json.dumps(value)
    return repr(value) if isinstance(value, int | float) else type(value).__name__


def _regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)
