"""The Prometheus textfile: exposition format 0.0.4 checked by a small parser, escaping, stable order,
atomic replacement, counter monotonicity."""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

import pytest

from ccm_agentd.metrics import Metrics

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
LABEL = rf"[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE}"
VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)"
SAMPLE_RE = re.compile(rf"({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? ({VALUE})")
HELP_RE = re.compile(rf"# HELP ({NAME}) (.*)")
TYPE_RE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)")
PAIR_RE = re.compile(rf"([a-zA-Z_][a-zA-Z0-9_]*)=({LABEL_VALUE})")

Series = tuple[str, tuple[tuple[str, str], ...]]


def _unescape(quoted: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), quoted[1:-1])


def parse(text: str) -> tuple[dict[str, str], dict[Series, float]]:
    """Types by family and values by series; asserts the format rules a scraper enforces."""
    assert text == "" or text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[Series, float] = {}
    done: set[str] = set()  # families whose samples have ended: they must not come back
    current = None
    for line in text.splitlines():
        if m := HELP_RE.fullmatch(line):
            assert m.group(1) not in helps and m.group(1) not in types, f"HELP after TYPE or twice: {line}"
            helps.add(m.group(1))
            family = m.group(1)
        elif m := TYPE_RE.fullmatch(line):
            assert m.group(1) not in types, f"TYPE twice: {line}"
            types[family := m.group(1)] = m.group(2)
        else:
            m = SAMPLE_RE.fullmatch(line)
            assert m, f"not a sample line: {line!r}"
            family = m.group(1)
            assert family in types, f"sample before its TYPE: {line}"
            labels = tuple((k, _unescape(v)) for k, v in PAIR_RE.findall(m.group(2) or ""))
            assert len({k for k, _ in labels}) == len(labels), f"repeated label: {line}"
            series = (family, tuple(sorted(labels)))
            assert series not in samples, f"duplicate series: {line}"
            samples[series] = float(m.group(3))
        if family != current:
            assert family not in done, f"{family} is split into two groups"
            if current is not None:
                done.add(current)
            current = family
    return types, samples


@pytest.mark.parametrize(
    "bad",
    [
        "ccm_x 1\n",  # no TYPE
        "# TYPE ccm_x gauge\nccm_x 1\nccm_x 2\n",  # duplicate series
        '# TYPE ccm_x gauge\nccm_x{a="1"} 1\nccm_x{a="1"} 2\n',
        '# TYPE ccm_x gauge\nccm_x{a="x"y"} 1\n',  # unescaped quote
        "# TYPE ccm_x gauge\n# TYPE ccm_x gauge\n",
        "# TYPE 1x gauge\n1x 1\n",
        "# TYPE ccm_x gauge\nccm_x 1",  # no final newline
        "# TYPE ccm_x gauge\n# TYPE ccm_y gauge\nccm_x 1\n",  # family split
    ],
)
def test_the_parser_rejects_invalid_text(bad: str) -> None:
    with pytest.raises(AssertionError):
        parse(bad)


def test_render_is_valid_exposition_format() -> None:
    m = Metrics()
    m.set_gauge("ccm_sessions", 3, {"state": "working"}, help="Sessions by state.")
    m.set_gauge("ccm_sessions", 1, {"state": "waiting"})
    m.inc("ccm_deliveries_total", labels={"outcome": "delivered"}, help="Queued prompts by outcome.")
    m.inc("ccm_deliveries_total", 2, {"outcome": "failed"})
    m.set_gauge("ccm_loop_lag_seconds", 0.0125, help="How late the event loop ran its last timer.")
    m.set_help("ccm_stalls_total", "Sessions declared stalled.", "counter")
    m.inc("ccm_notifications_total", labels={"outcome": "sent", "kind": "finished"})
    text = m.render()
    types, samples = parse(text)
    assert types == {
        "ccm_deliveries_total": "counter",
        "ccm_loop_lag_seconds": "gauge",
        "ccm_notifications_total": "counter",
        "ccm_sessions": "gauge",
        "ccm_stalls_total": "counter",
    }
    assert samples == {
        ("ccm_sessions", (("state", "working"),)): 3,
        ("ccm_sessions", (("state", "waiting"),)): 1,
        ("ccm_deliveries_total", (("outcome", "delivered"),)): 1,
        ("ccm_deliveries_total", (("outcome", "failed"),)): 2,
        ("ccm_loop_lag_seconds", ()): 0.0125,
        ("ccm_notifications_total", (("kind", "finished"), ("outcome", "sent"))): 1,
    }
    assert text.splitlines()[:5] == [
        "# HELP ccm_deliveries_total Queued prompts by outcome.",
        "# TYPE ccm_deliveries_total counter",
        'ccm_deliveries_total{outcome="delivered"} 1',
        'ccm_deliveries_total{outcome="failed"} 2',
        "# HELP ccm_loop_lag_seconds How late the event loop ran its last timer.",
    ]
    assert "# TYPE ccm_stalls_total counter\n" in text  # declared, no sample yet: still a valid family
    assert 'ccm_notifications_total{kind="finished",outcome="sent"} 1\n' in text


def test_label_values_and_help_are_escaped() -> None:
    m = Metrics()
    nasty = 'a\\b"c\nd}e,f="g'
    m.set_gauge("ccm_x", 1, {"v": nasty}, help='line\\one\nline "two"')
    text = m.render()
    assert '# HELP ccm_x line\\\\one\\nline "two"\n' in text
    assert 'ccm_x{v="a\\\\b\\"c\\nd}e,f=\\"g"} 1\n' in text
    _, samples = parse(text)
    assert samples == {("ccm_x", (("v", nasty),)): 1}


def test_output_is_stable_whatever_the_insertion_order() -> None:
    a, b = Metrics(), Metrics()
    a.set_gauge("ccm_b", 1, {"y": "2", "x": "1"})
    a.set_gauge("ccm_b", 2, {"x": "0", "y": "9"})
    a.inc("ccm_a_total", labels={"k": "z"})
    a.inc("ccm_a_total", labels={"k": "a"})
    b.inc("ccm_a_total", labels={"k": "a"})
    b.set_gauge("ccm_b", 2, {"y": "9", "x": "0"})
    b.inc("ccm_a_total", labels={"k": "z"})
    b.set_gauge("ccm_b", 1, {"x": "1", "y": "2"})
    assert a.render() == b.render() == a.render()
    assert a.render().splitlines() == [
        "# TYPE ccm_a_total counter",
        'ccm_a_total{k="a"} 1',
        'ccm_a_total{k="z"} 1',
        "# TYPE ccm_b gauge",
        'ccm_b{x="0",y="9"} 2',
        'ccm_b{x="1",y="2"} 1',
    ]


def test_values_formats() -> None:
    m = Metrics()
    for i, v in enumerate([0, 7.0, -2, 0.5, 1e-7, 2.0**60, math.inf, -math.inf, math.nan]):
        m.set_gauge("ccm_v", v, {"i": str(i)})
    lines = [line.split(" ")[1] for line in m.render().splitlines()[1:]]
    assert lines == ["0", "7", "-2", "0.5", "1e-07", "1.152921504606847e+18", "+Inf", "-Inf", "NaN"]
    parse(m.render())


def test_counters_are_monotonic_and_typed() -> None:
    m = Metrics()
    m.inc("ccm_continues_total")
    m.inc("ccm_continues_total", 2.5)
    m.inc("ccm_continues_total", 0)
    assert m.value("ccm_continues_total") == 3.5
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError):
            m.inc("ccm_continues_total", bad)
    assert m.value("ccm_continues_total") == 3.5
    with pytest.raises(ValueError):
        m.set_gauge("ccm_continues_total", 0)  # a counter cannot be set back
    with pytest.raises(ValueError):
        m.clear_gauge("ccm_continues_total")
    with pytest.raises(ValueError):
        m.inc("ccm_continues")  # counters end in _total
    m.set_gauge("ccm_sessions", 1)
    with pytest.raises(ValueError):
        m.set_help("ccm_sessions", "x", "counter")
    for name, labels in (
        ("1bad", None),
        ("ccm-x", None),
        ("ccm_x", {"bad-label": "v"}),
        ("ccm_x", {"__x": "v"}),
    ):
        with pytest.raises(ValueError):
            m.set_gauge(name, 1, labels)


def test_clear_gauge_drops_every_label_set() -> None:
    m = Metrics()
    m.set_gauge("ccm_sessions", 2, {"state": "working"}, help="Sessions by state.")
    m.set_gauge("ccm_sessions", 1, {"state": "waiting"})
    m.clear_gauge("ccm_sessions")
    m.clear_gauge("ccm_never_set")  # nothing to clear is fine
    m.set_gauge("ccm_sessions", 3, {"state": "waiting"})
    assert m.render().splitlines() == [
        "# HELP ccm_sessions Sessions by state.",
        "# TYPE ccm_sessions gauge",
        'ccm_sessions{state="waiting"} 3',
    ]
    assert m.value("ccm_sessions", {"state": "working"}) is None


def test_write_replaces_the_file_atomically(ccm_home: Path) -> None:
    directory = ccm_home / "agentd"
    directory.mkdir(parents=True)
    path = directory / "metrics.prom"
    path.write_text("old\n")
    old_inode = path.stat().st_ino
    m = Metrics()
    m.set_gauge("ccm_sessions", 2, {"state": "working"})
    m.write(str(path))
    assert path.read_text() == m.render()
    assert path.stat().st_ino != old_inode  # a new file renamed over the old one, not rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(directory) == ["metrics.prom"]  # no temp file left behind
    m.inc("ccm_stalls_total")
    m.write(str(path), mode=0o644)  # for a node_exporter textfile directory outside the state dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    parse(path.read_text())
    assert Metrics().render() == ""
