"""The content-addressed spore repo: ``<digest>.spore`` files named by their own sha256.

Writes go to a temp file in the repo directory, are fsynced and renamed, so a reader sees a
whole spore or none; concurrent puts of the same spore race harmlessly to the same name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

from .errors import SporeError, UnknownSpore
from .limits import Limits
from .spore import CHUNK, Verified, open_regular, verify

__all__ = ["DIGEST_RE", "Repo"]

DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_PREFIX_RE = re.compile(r"[0-9a-f]{1,64}")
_SUFFIX = ".spore"
MIN_PREFIX = 4
STALE_PARTIAL_AGE = 3600.0


class Repo:
    """A directory of spores, addressed by digest (sha256 of the spore file).

    Args:
        root: The repo directory (``home.repo``); created on the first put.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Repo({str(self.root)!r})"

    def _file(self, digest: str) -> Path:
        if not DIGEST_RE.fullmatch(digest):
            raise UnknownSpore(f"bad digest {digest!r}: expected 64 lowercase hex characters")
        return self.root / f"{digest}{_SUFFIX}"

    def has(self, digest: str) -> bool:
        """True if a spore file of that full digest is in the repo (content not re-checked)."""
        return bool(DIGEST_RE.fullmatch(digest)) and self._file(digest).is_file()

    def digests(self) -> list[str]:
        """Every digest in the repo, sorted."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n[:-len(_SUFFIX)] for n in names
                      if n.endswith(_SUFFIX) and DIGEST_RE.fullmatch(n[:-len(_SUFFIX)]))

    def resolve(self, digest_or_prefix: str) -> str:
        """The full digest for a full digest or a unique prefix (at least 4 hex characters).

        Raises:
            UnknownSpore: (exit 2) not hex, too short, no match, or an ambiguous prefix.
        """
        text = digest_or_prefix.strip().lower()
        if not _PREFIX_RE.fullmatch(text):
            raise UnknownSpore(f"bad digest {digest_or_prefix!r}: expected hex characters")
        if len(text) == 64:
            if not self.has(text):
                raise UnknownSpore(f"no spore {text} in the repo {self.root}")
            return text
        if len(text) < MIN_PREFIX:
            raise UnknownSpore(f"digest prefix {text!r} is too short (at least {MIN_PREFIX})")
        matches = [d for d in self.digests() if d.startswith(text)]
        if not matches:
            raise UnknownSpore(f"no spore matching {text!r} in the repo {self.root}")
        if len(matches) > 1:
            raise UnknownSpore(f"digest prefix {text!r} is ambiguous ({len(matches)} spores)")
        return matches[0]

    def location(self, digest: str) -> Path:
        """Where the spore file of ``digest`` is or would be (nothing is read nor checked)."""
        return self._file(digest)

    def path(self, digest: str) -> Path:
        """The spore file of ``digest``, after re-checking that its sha256 is its name.

        Raises:
            UnknownSpore: (exit 2) no such spore.
            SporeError: the file's content does not match its name (corrupted or tampered).
        """
        path = self._file(digest)
        try:
            with open(path, "rb") as f:
                actual = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            raise UnknownSpore(f"no spore {digest} in the repo {self.root}") from None
        if actual != digest:
            raise SporeError(f"repo file {path.name} does not match its name (its sha256 is "
                             f"{actual}): corrupted or tampered")
        return path

    def verify(self, digest: str, trusted: frozenset[str],
               limits: Limits | None = None) -> Verified:
        """Verify the repo's spore ``digest`` (content vs name included) in one pass.

        Raises:
            UnknownSpore: no such spore.
            SporeError: verification failed.
        """
        path = self._file(digest)
        if not path.is_file():
            raise UnknownSpore(f"no spore {digest} in the repo {self.root}")
        return verify(path, trusted, limits, expected_digest=digest)

    def put(self, spore_path: Path | str, trusted: frozenset[str] | None = None,
            limits: Limits | None = None) -> str:
        """Store a spore; a spore already present is left as it is.

        Args:
            spore_path: The spore file to copy in.
            trusted: When given, the copy is fully verified before it enters the repo.
            limits: Limits for that verification.

        Returns:
            The digest.

        Raises:
            SporeError: verification failed (the repo is unchanged).
            SporeInputError: the file cannot be read.
        """
        src = Path(spore_path)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.remove_stale_partials()
        fin = os.fdopen(open_regular(src, "spore"), "rb")
        tmp_fd, tmp_name = tempfile.mkstemp(prefix=".put-", suffix=".partial", dir=self.root)
        try:
            sha = hashlib.sha256()
            with fin, os.fdopen(tmp_fd, "wb", buffering=0) as out:
                if limits and os.fstat(fin.fileno()).st_size > limits.max_archive_bytes:
                    raise SporeError(f"archive is over the limit of {limits.max_archive_bytes} "
                                     "bytes")
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while got := fin.readinto(buf):
                    sha.update(view[:got])
                    out.write(view[:got])
                os.fchmod(out.fileno(), 0o644)
                os.fsync(out.fileno())
            digest = sha.hexdigest()
            return self.adopt(Path(tmp_name), trusted, limits, digest=digest)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    def remove_stale_partials(self, max_age: float = STALE_PARTIAL_AGE) -> list[str]:
        """Remove temp files that a killed publish left behind (older than ``max_age`` s).

        Returns:
            The names removed.
        """
        removed: list[str] = []
        cutoff = time.time() - max_age
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return removed
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".partial"):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed.append(entry.name)
                except FileNotFoundError:
                    continue
        return removed

    def adopt(self, tmp: Path, trusted: frozenset[str] | None = None,
              limits: Limits | None = None, *, digest: str | None = None) -> str:
        """Move a finished temp file that lives in the repo directory to its digest name.

        Verifies it first when ``trusted`` is given; removes it if verification fails or the
        spore is already present.

        Raises:
            SporeError: verification failed (the temp file is removed).
        """
        try:
            if trusted is not None:
                digest = verify(tmp, trusted, limits, expected_digest=digest).digest
            elif digest is None:
                with open(tmp, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            final = self._file(digest)
            if not final.exists():
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
                _fsync_dir(self.root)
            return digest
        finally:
            tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
