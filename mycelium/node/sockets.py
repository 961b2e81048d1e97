"""What the kernel says about a workload's sockets: the drain's view of requests in flight.

After the edge dropped an endpoint and closed its idle keep-alive connections to it, what
remains established to the workload's port are requests in flight. Linux lists every TCP socket
in ``/proc/net/tcp`` and ``/proc/net/tcp6``; one read of each costs well under a millisecond.
"""

from __future__ import annotations

__all__ = ["ESTABLISHED", "established", "established_to", "port_of"]

ESTABLISHED = "01"
"""The state column's value for an established connection in ``/proc/net/tcp``."""

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def established(port: int, tables: tuple[str, ...] = _TABLES) -> int:
    """Established TCP connections to local ``port`` (IPv4 and IPv6).

    A table that cannot be read (no IPv6, not Linux) counts as empty.
    """
    return established_to([port], tables)


def established_to(ports: list[int], tables: tuple[str, ...] = _TABLES) -> int:
    """Established TCP connections to any of the local ``ports``, in one read of the tables
    (an app leaving a node waits for all its instances at once)."""
    needles = tuple(f":{port:04X} " for port in ports)
    count = 0
    for table in tables:
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)  # the header
                count += sum(1 for line in f if any(
                    _is_established_to(line, needle) for needle in needles))
        except OSError:
            continue
    return count


def _is_established_to(line: str, needle: str) -> bool:
    fields = line.split(None, 4)
    return len(fields) > 3 and fields[3] == ESTABLISHED and (fields[1] + " ").endswith(needle)


def port_of(url: str) -> int | None:
    """The port of ``http://host:port[/…]``, or None if the URL names none."""
    try:
        return int(url.rsplit(":", 1)[1].split("/", 1)[0])
    except (IndexError, ValueError):
        return None
