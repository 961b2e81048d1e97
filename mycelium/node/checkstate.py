"""The pure core of health checks: counting results and deciding Ready, serving and restarts.

Kubernetes' probe semantics as data. Each check keeps a :class:`Tally` of consecutive passes
and failures; ``successes`` passes in a row make it pass, ``failures`` failures in a row make it
fail. A :class:`Book` holds the tallies of one instance and decides, result by result:

- **startup** checks gate everything else: until each has passed once (it then stops running),
  no other check runs; ``failures`` failures in a row (when > 0) fail the launch;
- the instance is **Ready** once every startup check passed and every readiness check passes
  (before that, readiness checks poll at the startup rate, so a readiness check that passes
  at once makes the instance Ready at once);
- once Ready, a failing **readiness** check takes the instance out of the routes
  (``serving`` False) and a passing one brings it back, but ``serving`` changes at most once per
  readiness interval, so a check that flaps does not churn the edge's routes;
- a failing **liveness** check restarts the instance (``liveness_failed: <name>: <detail>``).

Nothing here reads a clock, a socket or a thread: the engine (:mod:`.checks`) feeds it results
and applies its :class:`Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mycelium.messages import CheckResult
from mycelium.spores.checks import STARTUP_INTERVAL, CheckSpec

__all__ = ["Book", "Decision", "Tally", "early", "effective_checks", "tally", "watchdog_expired"]


@dataclass(frozen=True, slots=True)
class Tally:
    """Consecutive passes and failures of one check, and whether it passes now."""

    passes: int = 0
    fails: int = 0
    passing: bool = False


def tally(before: Tally, ok: bool, spec: CheckSpec) -> Tally:
    """Count one result.

    A check passes once ``successes`` results in a row passed, and stops passing once
    ``failures`` results in a row failed (``failures`` 0: a startup check that only the deadline
    fails). A startup check that passed stays passed: it has done its job.
    """
    if ok:
        passes = before.passes + 1
        return Tally(passes, 0, before.passing or passes >= spec.successes)
    fails = before.fails + 1
    if spec.role == "startup" and before.passing:
        return Tally(0, fails, True)
    return Tally(0, fails, before.passing and (spec.failures == 0 or fails < spec.failures))


def effective_checks(checks: tuple[CheckSpec, ...], health: str) -> tuple[CheckSpec, ...]:
    """The checks an instance runs: the manifest's, plus ``GET <health>`` as the startup check
    when there is neither a startup nor a readiness check (so only liveness checks were given).
    """
    if not checks or any(c.role in ("startup", "readiness") for c in checks):
        return checks
    implicit = CheckSpec(type="http", role="startup", name="health", interval=STARTUP_INTERVAL,
                         timeout=1.0, failures=0, successes=1, path=health)
    return (implicit, *checks)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the instance must do after a result: every field is the new truth, not a delta.

    ``became_ready`` is True on the one result that made the instance Ready; ``serving`` is
    whether the edge should route to it; ``restart`` a liveness reason; ``launch_failed`` a
    startup check's reason.
    """

    became_ready: bool = False
    serving: bool = True
    restart: str | None = None
    launch_failed: str | None = None


@dataclass(frozen=True, slots=True)
class Book:
    """The tallies of one instance's checks and what they decided so far (immutable).

    ``changed_at`` is when (monotonic seconds, from the caller) ``serving`` last changed.
    """

    specs: tuple[CheckSpec, ...]
    tallies: tuple[Tally, ...]
    ready: bool = False
    serving: bool = True
    changed_at: float = 0.0

    @classmethod
    def new(cls, specs: tuple[CheckSpec, ...]) -> Book:
        """A fresh book: nothing passed yet except liveness, which passes until it fails."""
        return cls(specs, tuple(Tally(passing=s.role == "liveness") for s in specs))

    @property
    def started(self) -> bool:
        """Every startup check has passed (True when there is none)."""
        return all(t.passing for s, t in zip(self.specs, self.tallies, strict=True)
                   if s.role == "startup")

    def passing(self, role: str) -> bool:
        """Every check of ``role`` passes now (True when there is none)."""
        return all(t.passing for s, t in zip(self.specs, self.tallies, strict=True)
                   if s.role == role)

    def active(self) -> tuple[CheckSpec, ...]:
        """The checks that should run now: startup ones until each passed, then the others.

        ``notify`` checks are in the list too; they are not run but answered by the workload.
        """
        if not self.started:
            return tuple(s for s, t in zip(self.specs, self.tallies, strict=True)
                         if s.role == "startup" and not t.passing)
        return tuple(s for s in self.specs if s.role != "startup")

    def interval(self, spec: CheckSpec) -> float:
        """How long after a result ``spec`` runs again: a readiness check polls at the startup
        rate (an exec one every 0.1 s) until the instance is first Ready, then at its own
        interval."""
        if spec.role == "readiness" and not self.ready:  # an exec check forks: not 100 a second
            return min(spec.interval, STARTUP_INTERVAL if spec.type != "exec" else 0.1)
        return spec.interval

    def hold(self) -> float:
        """The shortest readiness interval (less what its check may run :func:`early`):
        ``serving`` changes at most once per this long."""
        return min((s.interval - early(s.interval) for s in self.specs if s.role == "readiness"),
                   default=0.0)

    def observe(self, result: CheckResult, now: float) -> tuple[Book, Decision]:
        """Count ``result`` (at monotonic ``now``) and decide what the instance does.

        A result of a check that is not active (a startup check after startup, a late answer)
        is ignored, and so is a result for an unknown name.
        """
        index = next((i for i, s in enumerate(self.specs) if s.name == result.check), None)
        if index is None or self.specs[index] not in self.active():
            return self, self._decision()
        spec = self.specs[index]
        before = self.tallies[index]
        after = tally(before, result.ok, spec)
        book = replace(self, tallies=(*self.tallies[:index], after, *self.tallies[index + 1:]))
        if spec.role == "startup" and not after.passing and spec.failures and (
                after.fails >= spec.failures):
            return book, replace(book._decision(), launch_failed=(
                f"startup_failed: {spec.name}: {result.detail}"))
        if spec.role == "liveness" and before.passing and not after.passing:
            return book, replace(book._decision(), restart=(
                f"liveness_failed: {spec.name}: {result.detail}"))
        became_ready = False
        if not book.ready:
            if book.started and book.passing("readiness"):
                book = replace(book, ready=True, serving=True, changed_at=now)
                became_ready = True
        else:
            wanted = book.passing("readiness")
            if wanted != book.serving and now - book.changed_at >= book.hold():
                book = replace(book, serving=wanted, changed_at=now)
        return book, replace(book._decision(), became_ready=became_ready)

    def _decision(self) -> Decision:
        return Decision(serving=self.serving)


def early(interval: float) -> float:
    """How much sooner than ``interval`` a Ready instance's check may run again: 2 % of it, at
    most 50 ms (the engine lets the checks of hundreds of instances come due together)."""
    return min(interval * 0.02, 0.05)


def watchdog_expired(last_ping: float, now: float, watchdog: float) -> bool:
    """True once no ``WATCHDOG=1`` came for ``watchdog`` seconds (systemd's WatchdogSec)."""
    return now - last_ping > watchdog
