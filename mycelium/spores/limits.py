"""Size limits applied to every spore before a single byte of it is trusted."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SporeError

__all__ = ["MIB", "Limits"]

MIB = 1024 * 1024
_ZIP32_MAX = 0xFFFF_FFFF - 64 * 1024  # spores never need zip64: stay clear of its threshold


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds for a spore, checked before anything is extracted or run.

    Attributes:
        max_archive_bytes: Size of the whole spore file.
        max_binary_bytes: Size of the ``binary`` entry (declared and actual).
        max_manifest_bytes: Size of ``manifest.json``.
        max_ratio: Largest uncompressed/compressed ratio of any entry (zip bombs).

    Raises:
        SporeError: A limit is not positive or needs zip64 (over ~4 GiB).
    """

    max_archive_bytes: int = 1024 * MIB
    max_binary_bytes: int = 1024 * MIB
    max_manifest_bytes: int = 64 * 1024
    max_ratio: float = 100.0

    def __post_init__(self) -> None:
        for name in ("max_archive_bytes", "max_binary_bytes", "max_manifest_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _ZIP32_MAX:
                raise SporeError(f"limits: {name} must be an integer in 1..{_ZIP32_MAX}, "
                                 f"got {value!r}")
        if not self.max_ratio >= 1:
            raise SporeError(f"limits: max_ratio must be >= 1, got {self.max_ratio!r}")

    @classmethod
    def from_mb(cls, max_archive_mb: float, max_binary_mb: float) -> Limits:
        """Limits from the config's ``spores.max_archive_mb`` / ``spores.max_binary_mb``."""
        return cls(max_archive_bytes=int(max_archive_mb * MIB),
                   max_binary_bytes=int(max_binary_mb * MIB))
