"""Spores: signed, content-addressed workload bundles (Flow A).

A spore is a canonical zip of ``manifest.json`` and ``binary``; the manifest is signed with
Ed25519 and carries the binary's sha256; the repo names each spore by the sha256 of its file.
Nothing in a spore is used before :func:`verify` has checked all of it.
"""

from __future__ import annotations

from .errors import KeyFileError, ManifestError, SporeError, SporeInputError, UnknownSpore
from .keys import keygen, load_signing_key, load_trusted, public_hex, trust
from .limits import Limits
from .manifest import (
    Manifest,
    canonical_json,
    load_input_manifest,
    parse_input_manifest,
    parse_spore_manifest,
)
from .publish import publish
from .repo import Repo
from .spore import Packed, Verified, extract, inspect, pack, verify

__all__ = [
    "KeyFileError",
    "Limits",
    "Manifest",
    "ManifestError",
    "Packed",
    "Repo",
    "SporeError",
    "SporeInputError",
    "UnknownSpore",
    "Verified",
    "canonical_json",
    "extract",
    "inspect",
    "keygen",
    "load_input_manifest",
    "load_signing_key",
    "load_trusted",
    "pack",
    "parse_input_manifest",
    "parse_spore_manifest",
    "public_hex",
    "publish",
    "trust",
    "verify",
]
