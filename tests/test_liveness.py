"""Reading usage-limit notices: is it one, and when does the limit reset (ccm_agentd/liveness.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from ccm_agentd import liveness

NOW = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("state", "error", "message", "limited"),
    [
        ("error", "rate_limit", "API Error: 429 rate_limit_error", True),
        ("error", "unknown", "API Error: 400 bad request", False),
        ("idle", None, "Claude AI usage limit reached|1795000000", True),
        ("idle", None, "5-hour limit reached ∙ resets 3pm", True),
        ("idle", None, "You've hit your limit · resets 11:30am (Europe/Paris)", True),
        ("idle", None, "I added retry handling for HTTP 429 and the rate limit reached by bursts.", False),
        ("working", None, "5-hour limit reached ∙ resets 3pm", False),
    ],
)
def test_what_counts_as_a_usage_limit(state: str, error: str | None, message: str, limited: bool) -> None:
    status = {"state": state, "error": error, "last_assistant_message": message}
    assert liveness.is_rate_limit(status) is limited


def test_reset_times() -> None:
    assert liveness.reset_time("Claude AI usage limit reached|1795000000", NOW, 3600) == 1795000000
    assert liveness.reset_time("rate limited, try again in 20 minutes", NOW, 3600) == NOW + 1200
    paris = liveness.reset_time("You've hit your limit · resets 11:30am (Europe/Paris)", NOW, 3600)
    # 10:00 UTC is 11:00 in Paris (CET): 11:30 Paris is 30 minutes away.
    assert paris == NOW + 1800
    utc = liveness.reset_time("limit reached ∙ resets 9am (UTC)", NOW, 3600)
    assert utc == NOW + 23 * 3600  # 9:00 has passed today: tomorrow
    assert liveness.reset_time("usage limit reached", NOW, 3600) == NOW + 3600
