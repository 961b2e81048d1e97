"""What it takes to make the running mesh match a file: a pure function, app by app.

Identity of a spore is what its signed manifest says: an app whose ``binary`` hashes to the
running spore's ``binary_sha256`` (same size) and whose manifest's input fields equal the
running spore's is the same spore, however and whenever it was packed. A ``digest = …`` table
is the same spore when it names the running digest. Beside identity, the deploy settings are
compared one by one. Each app gets one action:

- ``create``: no plan runs for it;
- ``update``: another spore (a blue/green rollout), or the plan's own spore whose rollout
  failed and which runs below ``min`` (a retry);
- ``scale``: only ``min``, ``max`` or ``max_instances`` differ;
- ``settings``: other deploy settings differ (scale ones may too); a new ``env_secrets`` is
  one, and rolls the app out blue/green on the same spore;
- ``unchanged``; and, with ``prune``, ``destroy`` for a running app the file does not name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import COMPARED_KEYS, MANIFEST_KEYS, SCALE_KEYS, DesiredApp, RunningApp, Settings

__all__ = ["ACTIONS", "AppChange", "Change", "diff", "same_spore"]

ACTIONS = ("create", "update", "scale", "settings", "unchanged", "destroy")


@dataclass(frozen=True, slots=True)
class Change:
    """One field that differs: ``old`` is what runs (``None``: nothing), ``new`` what the file
    wants (``None`` for a digest that only packing will tell)."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class AppChange:
    """The action for one app, with every field that differs.

    ``pack`` says the file's binary + manifest must be packed and published first (the new
    digest is unknown until then); ``digest`` is the digest to deploy otherwise.
    """

    app: str
    action: str
    changes: tuple[Change, ...] = ()
    old_digest: str | None = None
    digest: str | None = None
    pack: bool = False
    desired: DesiredApp | None = None
    running: RunningApp | None = None

    @property
    def changing(self) -> bool:
        """True unless the action is ``unchanged``."""
        return self.action != "unchanged"

    @property
    def rolls_in_place(self) -> bool:
        """Whether the change rolls the app out on the spore it runs (blue/green onto new
        ``env_secrets``): its new instances differ from the old ones only by their ids, so it
        is over once none of :attr:`RunningApp.instances` is left."""
        return (self.action in ("scale", "settings") and self.running is not None
                and any(c.field == "env_secrets" for c in self.changes))


def same_spore(want: DesiredApp, have: RunningApp) -> bool:
    """Whether ``want`` is the spore that runs (see the module's docstring)."""
    if want.digest is not None:
        return want.digest == have.digest
    return (have.manifest is not None and want.binary_sha256 == have.binary_sha256
            and want.binary_size == have.binary_size
            and all(want.manifest.get(k) == have.manifest.get(k) for k in MANIFEST_KEYS))


def _settings_changes(old: Settings, new: Settings) -> list[Change]:
    return [Change(k, old.get(k), new.get(k)) for k in COMPARED_KEYS
            if old.get(k) != new.get(k)]


def _spore_changes(want: DesiredApp, have: RunningApp) -> list[Change]:
    changes: list[Change] = []
    old = have.manifest or {}
    for key in MANIFEST_KEYS:
        if key == "env":
            before, after = old.get("env") or {}, want.manifest.get("env") or {}
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    changes.append(Change(f"env.{name}", before.get(name), after.get(name)))
        elif old.get(key) != want.manifest.get(key):
            field = "manifest.warmup" if key == "warmup" else key
            changes.append(Change(field, old.get(key), want.manifest.get(key)))
    if want.binary_sha256 != have.binary_sha256 or want.binary_size != have.binary_size:
        changes.append(Change("binary", have.binary_sha256 or None, want.binary_sha256))
    changes.append(Change("digest", have.digest, want.digest))
    return changes


def _one(want: DesiredApp, have: RunningApp | None) -> AppChange:
    pack = want.digest is None
    if have is None:
        return AppChange(want.name, "create", (), None, want.digest, pack, want, None)
    settings = _settings_changes(have.settings, want.settings)
    if want.env_secrets != have.env_secrets:  # new environment variables: a rollout
        settings.append(Change("env_secrets", list(have.env_secrets), list(want.env_secrets)))
    if not same_spore(want, have):
        changes = _spore_changes(want, have) + settings
        return AppChange(want.name, "update", tuple(changes), have.digest, want.digest, pack,
                         want, have)
    if have.status == "failed" and have.ready < max(1, have.settings.min):
        # the plan names the file's spore, but its rollout failed and too little of it runs
        # (a rolled-back update names, and runs, the spore it went back to: that is unchanged)
        retry = Change("rollout", f"failed: {have.reason}", "retry")
        return AppChange(want.name, "update", (retry, *settings), have.digest, have.digest,
                         False, want, have)
    if not settings:
        return AppChange(want.name, "unchanged", (), have.digest, have.digest, False, want, have)
    action = "scale" if all(c.field in SCALE_KEYS for c in settings) else "settings"
    return AppChange(want.name, action, tuple(settings), have.digest, have.digest, False,
                     want, have)


def diff(desired: Sequence[DesiredApp], running: Mapping[str, RunningApp],
         prune: bool = False, timeout: float | None = None) -> list[AppChange]:
    """One :class:`AppChange` per app of ``desired`` (in its order), then, with ``prune``, a
    ``destroy`` for each running app it does not name (sorted by name).

    ``timeout`` is the mesh's default rollout deadline (``[rollout] timeout``): an app whose
    table names none is compared, and deployed, with it.
    """
    if timeout is not None:
        desired = [want.with_mesh_defaults(timeout) for want in desired]
    out = [_one(want, running.get(want.name)) for want in desired]
    if prune:
        named = {want.name for want in desired}
        out += [AppChange(name, "destroy", (), have.digest, None, False, None, have)
                for name, have in sorted(running.items()) if name not in named]
    return out
