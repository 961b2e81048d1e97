"""SupervisedActor: a Pykka actor whose every death reaches its supervisor once, after cleanup.

Pykka has no links or monitors. It sets ``actor_stopped`` *before* ``on_failure`` runs, and an
exception in ``on_start`` calls neither ``on_failure`` nor ``on_stop``, so waiting on
``actor_stopped`` would let a replacement race the dead actor's cleanup (e.g. for a port).
Instead the actor's own thread calls its watcher in a ``finally`` around Pykka's whole actor
loop (setup, running, teardown): every way of dying ends there, after cleanup, exactly once,
and no extra thread per child is needed.

An actor class with ``pooled = True`` has no thread of its own: its turns run on the shared
worker pool of :mod:`supervisors.pool`, and the same single end-of-life path runs at the end of
the turn that tore it down.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import pykka

from supervisors.pool import PooledInbox, shared_pool
from supervisors.singleton import Singleton

__all__ = ["NORMAL_REASONS", "Exit", "Latch", "SupervisedActor", "actor_of", "exit_of",
           "recent_exit"]

NORMAL_REASONS = frozenset({"normal", "shutdown"})

_RECENT_EXITS_MAX = 4096


class _RecentExits:
    """How recently finished actors ended, by urn: Pykka's refs hold the actor only weakly, so
    a caller that asks after the actor was collected (e.g. wait_exit on a root that shut
    itself down, or a start that failed) still learns its exit. Bounded: the oldest go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exits: OrderedDict[str, Exit] = OrderedDict()

    def get(self, urn: str) -> Exit | None:
        with self._lock:
            return self._exits.get(urn)

    def remember(self, urn: str, result: Exit) -> None:
        with self._lock:
            self._exits[urn] = result
            while len(self._exits) > _RECENT_EXITS_MAX:
                self._exits.popitem(last=False)


_recent_exits: Singleton[_RecentExits] = Singleton(_RecentExits)


def recent_exit(urn: str) -> Exit | None:
    """How the finished actor with this urn ended, if it finished recently; else ``None``."""
    return _recent_exits().get(urn)


@dataclass(frozen=True, slots=True)
class Exit:
    """How an actor ended.

    Attributes:
        reason: ``normal`` after a plain stop, else the exception's ``reason`` attribute or
            ``"<Type>: <message>"``; a supervisor that gives up exits ``shutdown`` (as in OTP)
            with ``details["cause"] == "reached_max_restart_intensity"``.
        normal: ``True`` for ``normal``/``shutdown``: transient children are not restarted.
        in_start: The actor died in ``on_start`` (it never ran).
        details: The exception's ``details`` attribute (a dict), for the report's extra.
    """

    reason: str
    normal: bool
    in_start: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)


def exit_of(exc: BaseException, in_start: bool = False) -> Exit:
    """The :class:`Exit` for an exception, using its ``reason``/``details`` attributes."""
    reason = getattr(exc, "reason", None)
    if not isinstance(reason, str) or not reason:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    details = getattr(exc, "details", None)
    return Exit(
        reason=reason,
        normal=reason in NORMAL_REASONS,
        in_start=in_start,
        details=dict(details) if isinstance(details, Mapping) else {},
    )


Watcher = Callable[[Exit], None]

_latch_guard: Singleton[threading.Lock] = Singleton(threading.Lock)


class Latch:
    """A one-shot ``threading.Event`` (``set``, ``is_set``, ``wait``; never cleared) on one lock.

    An Event is a Condition with a waiter deque, ~1.5 KB; every actor has three (Pykka's
    ``actor_stopped``, ``sv_started``, ``sv_done``), which with hundreds of pooled actors was
    megabytes of RSS. The lock is held from birth and released once by ``set``; a waiter
    acquires and at once releases it, letting the next waiter through.
    """

    __slots__ = ("_flag", "_lock")

    def __init__(self) -> None:
        self._flag = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with _latch_guard():  # two setters must not both release
            if self._flag:
                return
            self._flag = True
            self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            self._lock.release()
            return True
        return self._flag


log = logging.getLogger("pykka")  # where Pykka's own actor loop logs the same events


class SupervisedActor(pykka.ThreadingActor):
    """A ``pykka.ThreadingActor`` that a supervisor can watch.

    Subclass it instead of ``ThreadingActor`` and call ``super().__init__()``. Raise in a
    ``tell`` handler (or ``on_start``) to crash; give the exception ``reason: str`` and
    ``details: dict`` attributes to control the report. ``self.stop()`` exits ``normal``.

    Set the class attribute ``pooled = True`` to run on the shared worker pool instead of a
    thread of its own (see :mod:`supervisors.pool`): the same semantics, one message at a time,
    in order; only the thread is borrowed, turn by turn.
    """

    pooled: ClassVar[bool] = False
    """Run the actor's turns on the shared worker pool (no thread of its own while idle)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Pykka's Event, as a Latch (Pykka only sets, tests and waits on it); the ref shares it
        self.actor_stopped = self._actor_ref.actor_stopped = Latch()  # type: ignore[assignment]
        self._sv_lock = threading.Lock()
        self._sv_watcher: Watcher | None = None
        self._sv_failure: Exit | None = None
        self._sv_exit_reason: Exit | None = None
        self._sv_result: Exit | None = None
        self._sv_in_start = True
        self.sv_started = Latch()
        """Set once ``on_start`` returned or failed."""
        self.sv_done = Latch()
        """Set once the actor is gone and its cleanup (``on_failure``/``on_stop``) finished."""

    # -- Pykka hooks ---------------------------------------------------------------------

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]  # a staticmethod in Pykka
        if self.pooled:
            return PooledInbox(shared_pool())
        return pykka.ThreadingActor._create_actor_inbox()

    def _start_actor_loop(self) -> None:
        if not self.pooled:
            super()._start_actor_loop()
            return
        self._sv_set_up = False
        self._pool_inbox().start(self._pooled_turn)

    def _pool_inbox(self) -> PooledInbox:
        inbox = self.actor_inbox
        assert isinstance(inbox, PooledInbox)
        return inbox

    def _pooled_turn(self) -> None:
        """One turn on a pool worker: setup first, then messages until the inbox is empty."""
        inbox = self._pool_inbox()
        crash: BaseException | None = None
        try:
            if not self._sv_set_up:
                self._sv_set_up = True
                self._actor_loop_setup()
            while not self.actor_stopped.is_set():
                envelope = inbox.next_or_release()
                if envelope is None:
                    return  # idle: the thread goes back to the pool
                self._handle_envelope(envelope)
        except BaseException as exc:
            crash = exc
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
        # stopped: answer what is queued, and whatever arrives while we do
        self._actor_loop_teardown()
        while not inbox.release_if_empty():
            self._actor_loop_teardown()
        self._sv_finish(crash)

    def _handle_envelope(self, envelope: Any) -> None:
        """Pykka's ``_actor_loop_running`` body, for one message (pooled actors)."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                log.info(f"Exception returned from {self} to caller:", exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            log.debug(f"{sys.exc_info()[1]!r} in {self}. Stopping all actors.")
            self._stop()
            pykka.ActorRegistry.stop_all()

    def _actor_loop(self) -> None:
        crash: BaseException | None = None
        try:
            super()._actor_loop()
        except BaseException as exc:  # re-raised: only recorded as the exit reason
            crash = exc
            raise
        finally:
            self._sv_finish(crash)

    def _actor_loop_setup(self) -> None:
        try:
            super()._actor_loop_setup()
        finally:
            self._sv_in_start = False
            self.sv_started.set()

    def _stop(self) -> None:
        crash = sys.exc_info()[1]
        super()._stop()
        if crash is not None and not isinstance(crash, Exception):
            # Pykka's BaseException path: after this it stops every actor from this thread
            # (ActorRegistry.stop_all), which waits for our supervisor, so report now (cleanup
            # is done) or the supervisor would wait for us while we wait for it.
            self._sv_finish(crash)

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._sv_failure is None and exception_value is not None:
            self._sv_failure = exit_of(exception_value, in_start=self._sv_in_start)
        super()._handle_failure(exception_type, exception_value, traceback)

    # -- supervision -----------------------------------------------------------------------

    @property
    def start_failure(self) -> Exit | None:
        """Why ``on_start`` failed, or ``None``; meaningful once ``sv_started`` is set."""
        failure = self._sv_failure
        return failure if failure is not None and failure.in_start else None

    @property
    def exit(self) -> Exit | None:
        """How the actor ended, or ``None`` while it runs or cleans up."""
        return self._sv_result

    def exit_with(self, reason: str, details: Mapping[str, Any] | None = None) -> None:
        """Stop now, from inside the actor's own thread, with the given exit reason.

        The rest of the mailbox is not processed; ``on_stop`` runs. Used by supervisors that
        give up or shut down on their own (``shutdown``, normal, as OTP's) so that their
        parent sees that reason.

        Args:
            reason: The exit reason the watcher receives.
            details: Extra facts for the report.
        """
        self._sv_exit_reason = Exit(
            reason=reason, normal=reason in NORMAL_REASONS, details=dict(details or {})
        )
        self._stop()

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher(exit)`` once when the actor is gone (at once if it already is).

        The watcher runs in the dying actor's thread (or the caller's, if already dead) and
        must not block: a supervisor's watcher only ``tell``s it a message.
        """
        with self._sv_lock:
            result = self._sv_result
            if result is None:
                self._sv_watcher = watcher
                return
        watcher(result)

    def _sv_finish(self, crash: BaseException | None) -> None:
        if self.sv_done.is_set():
            return  # already reported (Pykka's BaseException path)
        if self._sv_failure is not None:
            result = self._sv_failure
        elif self._sv_exit_reason is not None:
            result = self._sv_exit_reason
        elif crash is not None:
            result = exit_of(crash)
        else:
            result = Exit(reason="normal", normal=True)
        with self._sv_lock:
            self._sv_result = result
            watcher, self._sv_watcher = self._sv_watcher, None
        _recent_exits().remember(self.actor_urn, result)
        self.sv_done.set()
        if watcher is not None:
            watcher(result)


def actor_of(ref: pykka.ActorRef[Any]) -> pykka.Actor | None:
    """The actor object behind a ref, or ``None`` once it was garbage-collected.

    Pykka keeps only a weak reference in the ref; a supervisor needs the object itself to
    :meth:`SupervisedActor.watch` it and wait on :attr:`SupervisedActor.sv_done`.
    """
    actor = ref._actor_weakref()  # Pykka has no public accessor
    return actor if isinstance(actor, pykka.Actor) else None
