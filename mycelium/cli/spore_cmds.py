"""Flow A commands: keygen, trust, pack, publish, verify, inspect (owned by the spores work).

Each command parses, calls :mod:`mycelium.spores`, and renders; every failure is a
:class:`~mycelium.errors.MyceliumError` that the entry point prints as one ``error:`` line.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mycelium.home import Home

if TYPE_CHECKING:
    from mycelium.spores import Limits, Verified

from .app import HomeOption, app, home_of

# Flow A's modules (PyNaCl, zip parsing) are imported by the commands that use them, so that the
# mesh commands (`mycelium status`, …) do not pay for them at start-up.
DIGEST_RE = re.compile(r"[0-9a-f]{64}")

__all__ = ["inspect_cmd", "keygen_cmd", "pack_cmd", "publish_cmd", "trust_cmd", "verify_cmd"]

KeyOption = Annotated[str, typer.Option(
    "--key", help="Name of the signing key in <home>/keys to sign with")]
ManifestOption = Annotated[Path | None, typer.Option(
    "--manifest", help="Input manifest, a JSON file (format: docs/reference.md#manifest)",
    show_default=False)]


def _limits(home: Home) -> Limits:
    """The spore limits from the home's config (``spores.max_archive_mb``/``max_binary_mb``)."""
    import mycelium.spores as sp
    from mycelium.operator.config import load_config

    spores = load_config(None, os.environ, home=home).spores
    return sp.Limits.from_mb(spores.max_archive_mb, spores.max_binary_mb)


def _is_digest_like(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text) and 4 <= len(text) <= 64


def _locate(home: Home, target: str) -> tuple[Path, str | None]:
    """A spore file path and, for a repo spore, the digest its name claims."""
    import mycelium.spores as sp
    path = Path(target)
    if path.is_file():
        # A file inside the repo is checked against the digest its name claims.
        name = path.name.removesuffix(".spore")
        in_repo = path.resolve().parent == home.repo.resolve() and path.name.endswith(".spore")
        return path, (name if in_repo and DIGEST_RE.fullmatch(name) else None)
    if _is_digest_like(target):
        digest = sp.Repo(home.repo).resolve(target)
        return home.repo / f"{digest}.spore", digest
    raise sp.SporeInputError(f"no spore file or repo digest {target!r}")


@app.command("keygen")
def keygen_cmd(
    name: Annotated[str, typer.Option(
        "--name", help="Name of the key pair in <home>/keys")] = "default",
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing key of that name")] = False,
    home: HomeOption = None,
) -> None:
    """Create an Ed25519 signing key pair; print its public key, which joins the trusted set.

    Refuses to overwrite an existing key without --force (exit 2).
    """
    import mycelium.spores as sp
    typer.echo(sp.keygen(home_of(home), name, force=force))


@app.command("trust")
def trust_cmd(
    pubkey: Annotated[str, typer.Argument(help="The signer's public key (64 hex characters)")],
    name: Annotated[str | None, typer.Option(
        "--name", help="Name to file the trusted key under in <home>/trusted")] = None,
    home: HomeOption = None,
) -> None:
    """Trust spores signed by PUBKEY in this home (trust is always local to a home)."""
    import mycelium.spores as sp
    typer.echo(sp.trust(home_of(home), pubkey, name))


@app.command("pack")
def pack_cmd(
    binary: Annotated[Path, typer.Argument(help="The workload executable to pack")],
    manifest: ManifestOption = None,
    key: KeyOption = "default",
    out: Annotated[Path | None, typer.Option(
        "-o", "--out", help="Spore file to write (default NAME-VERSION.spore here)")] = None,
    home: HomeOption = None,
) -> None:
    """Pack BINARY and its manifest into a signed spore file; print the spore's path."""
    import mycelium.spores as sp
    h = home_of(home)
    if manifest is None:
        raise sp.SporeInputError("pack needs --manifest FILE")
    limits = _limits(h)
    signing_key = sp.load_signing_key(h, key)
    if out is None:
        m = sp.load_input_manifest(manifest)
        out = Path(f"{m.name}-{m.version}.spore")
    if out.is_dir():
        raise sp.SporeInputError(f"output {out} is a directory")
    if not out.parent.is_dir():
        raise sp.SporeInputError(f"output directory {out.parent} does not exist")
    packed = sp.pack(binary, manifest, signing_key, out, limits=limits)
    typer.echo(str(packed.path))


@app.command("publish")
def publish_cmd(
    binary: Annotated[Path | None, typer.Argument(
        help="The workload executable to pack and publish (with --manifest)")] = None,
    manifest: ManifestOption = None,
    key: KeyOption = "default",
    spore: Annotated[Path | None, typer.Option(
        "--spore", help="Publish this spore file, packed elsewhere, instead of BINARY")] = None,
    home: HomeOption = None,
) -> None:
    """Pack (if needed), verify and put a spore into the repo; print its digest (64 hex).

    A failed publish leaves the repo untouched.
    """
    import mycelium.spores as sp
    h = home_of(home)
    digest = sp.publish(h, binary=binary, manifest=manifest, key=key, spore=spore,
                     limits=_limits(h))
    typer.echo(digest)


@app.command("verify")
def verify_cmd(
    target: Annotated[str, typer.Argument(
        metavar="DIGEST|FILE", help="A repo digest (a unique prefix of 4+ hex) or a spore file")],
    home: HomeOption = None,
) -> None:
    """Check signature, hashes, archive safety and signer; print 'ok DIGEST APP VERSION'.

    Anything short of ok, an unknown digest included, is exit 1 with the reason.
    """
    import mycelium.spores as sp
    h = home_of(home)
    try:
        path, digest = _locate(h, target)
        result: Verified = sp.verify(path, sp.load_trusted(h), _limits(h), expected_digest=digest)
    except (sp.UnknownSpore, sp.SporeInputError) as exc:
        # verify prints ok, or exits 1 with the reason — a spore it cannot find cannot be
        # verified either.
        raise sp.SporeError(str(exc)) from exc
    typer.echo(f"ok {result.digest} {result.manifest.name} {result.manifest.version}")


@app.command("inspect")
def inspect_cmd(
    target: Annotated[str, typer.Argument(
        metavar="DIGEST|FILE", help="A repo digest (a unique prefix of 4+ hex) or a spore file")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the signed manifest as one JSON object")] = False,
    home: HomeOption = None,
) -> None:
    """Show a spore's manifest (the container and signature are checked, not the signer)."""
    import mycelium.spores as sp
    h = home_of(home)
    path, _ = _locate(h, target)
    digest, manifest, trusted = sp.inspect(path, sp.load_trusted(h), _limits(h))
    if as_json:
        typer.echo(json.dumps(manifest.to_dict(), sort_keys=True))
        return
    rows = [
        ("digest", digest),
        ("name", manifest.name),
        ("version", manifest.version),
        ("health", manifest.health),
        ("args", json.dumps(list(manifest.args))),
        ("env", json.dumps(dict(manifest.env), sort_keys=True)),
        ("warmup", f"{manifest.warmup:g}s"),
        *([("checks", json.dumps([c.to_dict() for c in manifest.checks]))]
          if manifest.checks else []),
        ("binary", f"sha256 {manifest.binary_sha256} ({manifest.binary_size} bytes)"),
        ("created_at", manifest.created_at),
        ("signer", f"{manifest.signer} ({'trusted' if trusted else 'NOT trusted'})"),
    ]
    for label, value in rows:
        typer.echo(f"{label:<11} {value}")


