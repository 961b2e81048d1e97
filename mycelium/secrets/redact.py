"""Hiding secret values in text the mesh keeps or shows about a workload (its output tail).

A workload may print its own secret (a debug line, a failed connection string). The mesh
cannot stop that, but what it copies of the output into its own records — a crash report's
``output_tail``, ``status``'s ``last_exit``, a health check's detail (an exec check's first
line of output, a ``STATUS=`` text, the failure they explain) — should not carry it:
:func:`redact` replaces every occurrence of each of the app's values with ``<secret NAME>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["HIDDEN_TAIL", "redact", "redact_lines", "redact_or_hide", "redact_report"]

TYPE_CHECKING = False  # not typing's: the CLI's fast path imports this module
if TYPE_CHECKING:
    from mycelium.messages import CheckReport

HIDDEN_TAIL = "(output hidden: the app's secrets could not be read to hide them)"
"""What stands for a workload's lines when its app's secrets cannot be opened to hide them."""


def redact(text: str, values: Mapping[str, bytes]) -> str:
    """``text`` with every value of ``values`` replaced by ``<secret NAME>``.

    Longer values go first, so a value that contains another is hidden whole. A value that is
    not valid UTF-8 is matched as the text a workload's output decodes it to (with
    replacement characters), as well as its exact surrogate-escaped form.
    """
    if not values or not text:
        return text
    forms: list[tuple[str, str]] = []
    for name, value in values.items():
        for form in {value.decode("utf-8", "replace"), value.decode("utf-8", "surrogateescape")}:
            if form:
                forms.append((form, name))
    for form, name in sorted(forms, key=lambda f: -len(f[0])):
        text = text.replace(form, f"<secret {name}>")
    return text


def redact_lines(lines: Iterable[str], values: Mapping[str, bytes]) -> list[str]:
    """Each line redacted (see :func:`redact`). A value that spans two lines is not
    recognised in either: multi-line values are redacted only where a line holds them whole."""
    return [redact(line, values) for line in lines]


def redact_or_hide(lines: list[str], values: Mapping[str, bytes] | None) -> list[str]:
    """``lines`` redacted with ``values``; ``[HIDDEN_TAIL]`` when they could not be opened
    (None).

    For a record made where the values are not at hand (the ``up`` after a kill -9 of the mesh
    records the ends its workloads left): a record that cannot be redacted keeps no line
    rather than one that may show a value.
    """
    if not lines:
        return lines
    return [HIDDEN_TAIL] if values is None else redact_lines(lines, values)


def redact_report(report: CheckReport, values: Mapping[str, bytes]) -> CheckReport:
    """A health-check report with the workload's own words in it redacted: the last result's
    detail (an exec check's output line), the ``STATUS=`` text and the failure reason (which
    quotes a detail, and goes to the supervision log)."""
    if not values:
        return report
    import dataclasses

    last = report.last
    if last is not None:
        last = dataclasses.replace(last, detail=redact(last.detail, values))
    text, failure = report.status_text, report.failure
    return dataclasses.replace(report, last=last,
                               status_text=None if text is None else redact(text, values),
                               failure=None if failure is None else redact(failure, values))
