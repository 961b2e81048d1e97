"""The mesh's own side of systemd's sd_notify: ``mycelium up`` as a ``Type=notify`` service.

When systemd (or any supervisor speaking the protocol) starts ``mycelium up`` with
``NOTIFY_SOCKET`` set, the mesh sends ``READY=1`` once its edge accepts requests, ``STOPPING=1``
when it begins to shut down, and — with ``WATCHDOG_USEC`` set (``WatchdogSec=``) —
``WATCHDOG=1`` every half period while its edge still answers ``/_mycelium/health`` (so a
mesh whose edge hangs is restarted by systemd). The variables are taken out of the environment
at once, so that workloads never inherit the mesh's socket. Without ``NOTIFY_SOCKET`` every
call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, MutableMapping

from mycelium._logger import get_logger

__all__ = ["SystemdNotifier"]

log = get_logger(__name__)


class SystemdNotifier:
    """sd_notify for this process (reads and removes the variables from ``environ``).

    Args:
        environ: Where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are read
            (default ``os.environ``); they are removed from it.
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", "")
        usec = env.pop("WATCHDOG_USEC", "")
        pid = env.pop("WATCHDOG_PID", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog = int(usec) / 1_000_000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """A supervisor listens (``NOTIFY_SOCKET`` was set)."""
        return bool(self._address)

    def send(self, text: str) -> bool:
        """Send one datagram; False when disabled or the socket is gone (never raises)."""
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(text.encode("utf-8"), self._address)
            return True
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self._address, exc)
            return False

    def ready(self, status: str) -> None:
        """``READY=1`` with a ``STATUS=`` line."""
        self.send(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        """``STOPPING=1``, and no more watchdog pings."""
        self._stop.set()
        self.send("STOPPING=1\nSTATUS=shutting down")

    def start_watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping every half ``WATCHDOG_USEC`` while ``healthy()`` (no-op without a watchdog)."""
        if self.watchdog is None or not self.enabled or self._thread is not None:
            return
        period = self.watchdog / 2

        def run() -> None:
            while not self._stop.wait(period):
                ok = False
                with contextlib.suppress(Exception):
                    ok = healthy()
                if ok and not self._stop.is_set():
                    self.send("WATCHDOG=1")

        self._thread = threading.Thread(target=run, name="mycelium-sd-watchdog", daemon=True)
        self._thread.start()
