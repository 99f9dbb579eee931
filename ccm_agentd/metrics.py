"""Metrics in the Prometheus text exposition format (0.0.4), written as a file for node_exporter's textfile
collector: sessions by state, deliveries by outcome, continues, stalls, notifications, loop lag.

In memory only: a daemon restart resets the counters, which Prometheus's ``rate()``/``increase()`` treat as
a counter reset. ``write`` replaces the file atomically, so the collector never reads half of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ccm_hooks.fileio import atomic_write
from ccm_hooks.paths import FILE_MODE

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
KINDS = ("gauge", "counter")

LabelSet = tuple[tuple[str, str], ...]


@dataclass
class _Family:
    kind: str
    help: str = ""
    samples: dict[LabelSet, float] = field(default_factory=dict)


def _label_set(labels: Mapping[str, str] | None) -> LabelSet:
    if not labels:
        return ()
    for name in labels:
        # "__" prefixes are reserved for Prometheus's internal labels.
        if not LABEL_RE.match(name) or name.startswith("__"):
            raise ValueError(f"invalid label name: {name!r}")
    return tuple(sorted((name, str(value)) for name, value in labels.items()))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    # HELP text escapes backslash and newline only; a double quote stays as is (format 0.0.4).
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    # Whole numbers without ".0" (counts read better); 2**53 is where floats stop being exact integers.
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Metrics:
    """Gauges and counters keyed by name and label set, rendered in a stable order."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def _family(self, name: str, kind: str, help: str) -> _Family:
        if not NAME_RE.match(name):
            raise ValueError(f"invalid metric name: {name!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown metric kind: {kind!r}")
        # The Prometheus naming convention; enforced so a dashboard can tell a counter by its name.
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"{name}: counter names end in _total")
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind)
        elif family.kind != kind:
            raise ValueError(f"{name} is a {family.kind}, not a {kind}")
        if help:
            family.help = help
        return family

    def set_help(self, name: str, help: str, kind: str) -> None:
        """Declare a family, so it is rendered (with HELP and TYPE) even before it has a sample."""
        self._family(name, kind, help)

    def set_gauge(
        self, name: str, value: float, labels: Mapping[str, str] | None = None, help: str = ""
    ) -> None:
        self._family(name, "gauge", help).samples[_label_set(labels)] = float(value)

    def inc(
        self, name: str, amount: float = 1.0, labels: Mapping[str, str] | None = None, help: str = ""
    ) -> None:
        """Add ``amount`` (>= 0: counters only go up within a process) to a counter."""
        if not amount >= 0:  # also rejects NaN
            raise ValueError(f"{name}: a counter cannot change by {amount}")
        samples = self._family(name, "counter", help).samples
        key = _label_set(labels)
        samples[key] = samples.get(key, 0.0) + float(amount)

    def clear_gauge(self, name: str) -> None:
        """Drop every label set of a gauge, e.g. before setting sessions by state afresh (a state that no
        session is in any more must disappear or read 0, not keep its last count)."""
        family = self._families.get(name)
        if family is None:
            return
        if family.kind != "gauge":
            raise ValueError(f"{name} is a {family.kind}: only gauges can be cleared")
        family.samples.clear()

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The current value of one series, or None if it has none (for the health file and tests)."""
        family = self._families.get(name)
        return None if family is None else family.samples.get(_label_set(labels))

    def render(self) -> str:
        """Families sorted by name, samples by label set: the same state always gives the same text."""
        lines: list[str] = []
        for name in sorted(self._families):
            family = self._families[name]
            if family.help:
                lines.append(f"# HELP {name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {name} {family.kind}")
            for labels in sorted(family.samples):
                value = format_value(family.samples[labels])
                if labels:
                    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                    lines.append(f"{name}{{{inner}}} {value}")
                else:
                    lines.append(f"{name} {value}")
        return "".join(line + "\n" for line in lines)

    def write(self, path: str, mode: int = FILE_MODE) -> None:
        """Render and replace ``path`` atomically.

        ``mode`` defaults to 0600 like everything under the state dir (spec/layout.md: a file with group or
        other bits is an error there). node_exporter usually runs as its own user, so a daemon configured to
        write into the collector's directory should pass 0o644: the file holds counts, no prompts or paths
        (so label values must never carry them). The temp file ends in ``.tmp``, and the textfile collector
        only reads ``*.prom``, so it never sees a partial file.
        """
        atomic_write(path, self.render().encode("utf-8"), mode)
