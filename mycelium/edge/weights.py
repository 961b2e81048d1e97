"""Smooth weighted round-robin (nginx's algorithm): pure, no I/O, no clock.

Each pick adds every endpoint's weight to its running score, takes the highest score and
subtracts the total weight from it. Over any run of ``sum(weights)`` picks each endpoint is
chosen exactly ``weight`` times, and the choices are interleaved rather than bunched (weights
5, 1, 1 give ``a a b a c a a``, not ``a a a a a b c``), which is what lets a canary take its
share of requests from the first second on. Traefik's weighted round-robin does the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MAX_CYCLE", "SmoothWeights", "WeightedCycle"]


class SmoothWeights:
    """Running scores for one list of weights.

    Args:
        weights: One positive integer weight per endpoint, in the route's order.

    Raises:
        ValueError: an empty list, or a weight below 1.
    """

    __slots__ = ("_current", "_total", "weights")

    def __init__(self, weights: Sequence[int]) -> None:
        if not weights or min(weights) < 1:
            raise ValueError(f"weights must be positive integers, not {list(weights)}")
        self.weights = tuple(weights)
        self._total = sum(self.weights)
        self._current = [0] * len(self.weights)

    def pick(self) -> int:
        """The index of the next endpoint."""
        current, weights = self._current, self.weights
        best = 0
        for i, weight in enumerate(weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return best


MAX_CYCLE = 10_000
"""Longest cycle precomputed by :class:`WeightedCycle` (beyond it picks are computed live)."""


class WeightedCycle:
    """The same picks as :class:`SmoothWeights`, read from one precomputed cycle.

    SWRR repeats itself every ``sum(weights)`` picks (after dividing the weights by their gcd),
    so the edge computes one cycle when the routes change and then pays one list read per
    request instead of a pass over every endpoint.

    Args:
        weights: One positive integer weight per endpoint.

    Raises:
        ValueError: an empty list, or a weight below 1.
    """

    __slots__ = ("_cycle", "_live", "_pos")

    def __init__(self, weights: Sequence[int]) -> None:
        live = SmoothWeights(weights)
        divisor = math.gcd(*live.weights)
        reduced = [w // divisor for w in live.weights]
        self._live: SmoothWeights | None = None
        self._cycle: tuple[int, ...] = ()
        self._pos = 0
        if sum(reduced) <= MAX_CYCLE:
            smooth = SmoothWeights(reduced)
            self._cycle = tuple(smooth.pick() for _ in range(sum(reduced)))
        else:
            self._live = live

    def pick(self) -> int:
        """The index of the next endpoint."""
        if self._live is not None:
            return self._live.pick()
        pos = self._pos
        self._pos = pos + 1 if pos + 1 < len(self._cycle) else 0
        return self._cycle[pos]
