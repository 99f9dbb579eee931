"""Reading usage-limit notices: is it one, and when does the limit reset (ccm_agentd/liveness.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from ccm_agentd import liveness

NOW = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC).timestamp()
DAY = 86400


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
    # A clock time is rounded down to the minute by Claude Code: the reset is over at that minute's end.
    paris = liveness.reset_time("You've hit your limit · resets 11:30am (Europe/Paris)", NOW, 3600)
    # 10:00 UTC is 11:00 in Paris (CET): 11:30 Paris is 30 minutes away.
    assert paris == NOW + 1800 + 60
    utc = liveness.reset_time("limit reached ∙ resets 9am (UTC)", NOW, 3600)
    assert utc == NOW + 23 * 3600 + 60  # 9:00 has passed today: tomorrow
    assert liveness.reset_time("usage limit reached", NOW, 3600) == NOW + 3600


def test_a_reset_in_the_minute_the_limit_was_hit_is_this_minute_not_tomorrow() -> None:
    """2.1.197 shows a reset at 10:00:40 as "resets 10am" (rounded down): seen at 10:00:20 (or by a daemon
    that comes by later), that is this minute."""
    message = "You've hit your session limit · resets 10am (UTC)"
    said = NOW + 20
    assert liveness.reset_time(message, said, 3600, said_at=said) == NOW + 60
    assert liveness.reset_time(message, NOW + 300, 3600, said_at=said) == NOW + 60  # resumed at once
    # The minute before the one the limit was given in: that time tomorrow.
    assert liveness.reset_time("You've hit your limit · resets 9:59am (UTC)", said, 3600, said_at=said) == (
        NOW + DAY - 60 + 60
    )


def test_a_reset_more_than_a_day_away_carries_its_date() -> None:
    """Claude Code writes a reset more than 24 hours away with its date ("resets Nov 25, 3pm (UTC)"), and
    the year when it is another one: that day, not 3pm today or tomorrow, nor an hour from now."""
    weekly = "You've hit your weekly limit · resets Nov 25, 3pm (UTC)"
    assert liveness.reset_time(weekly, NOW, 3600) == NOW + 4 * DAY + 5 * 3600 + 60
    later = liveness.reset_time("You've hit your weekly limit · resets Jan 2, 2027, 9:30am (UTC)", NOW, 3600)
    assert later == dt.datetime(2027, 1, 2, 9, 31, tzinfo=dt.UTC).timestamp()
    # No year and the date has passed this year: next year's.
    jan = liveness.reset_time("You've hit your weekly limit · resets Jan 2, 9am (UTC)", NOW, 3600)
    assert jan == dt.datetime(2027, 1, 2, 9, 1, tzinfo=dt.UTC).timestamp()
    assert liveness.reset_time("resets Feb 30, 9am (UTC)", NOW, 3600) == NOW + 3600  # no such day
