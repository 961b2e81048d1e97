"""The error policy of every service thread: a failing callback is logged, never fatal.

The timer thread, the pool's workers, the node's reaper and prober run other code's callbacks
on a thread that serves the whole process. One broken callback must neither kill that thread
(every later timer, turn, exit or probe would be lost) nor vanish silently: it is logged with
its traceback on the service's logger, and the loop goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["call_logged"]


def call_logged(log: logging.Logger, what: str, callback: Callable[..., object],
                *args: object) -> None:
    """Run ``callback(*args)``; log any exception (with its traceback) as ``what failed``.

    Args:
        log: The logger of the service that runs the callback.
        what: What the callback is, for the log line ("a timer callback").
        callback: The callback.
        *args: Its arguments.
    """
    try:
        callback(*args)
    except BaseException:  # even SystemExit: it would end the service thread for everyone
        log.exception("%s failed", what)
