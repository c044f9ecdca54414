"""The one size format and the one duration format, against the arithmetic done by hand."""

import pytest

from alexnet2012.units import duration_text, size_text


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0:00:00"),
        (29.4, "0:00:29"),
        (59 * 60 + 31, "0:59:31"),
        (3 * 3600 + 7 * 60, "3:07:00"),
        (86_399, "23:59:59"),
        (86_399.6, "1d 0h"),  # rounds to a whole day
        (2 * 86_400 + 5 * 3600 + 1700, "2d 5h"),  # 5 h 28 min rounds down
        (2 * 86_400 + 5 * 3600 + 1900, "2d 6h"),  # 5 h 32 min rounds up
    ],
)
def test_durations_read_as_h_mm_ss_under_a_day_and_days_hours_above(seconds, text):
    assert duration_text(seconds) == text


@pytest.mark.parametrize(
    "n, text",
    [
        (None, "n/a"),
        (0, "0 bytes"),
        (999, "999 bytes"),
        (1000, "1.0 KB"),
        (455_123_456, "455.1 MB"),
        (61_100_840 * 4, "244.4 MB"),  # AlexNet's float32 weights
        (2_400_000_000, "2.4 GB"),
    ],
)
def test_sizes_read_in_decimal_units_with_one_decimal(n, text):
    assert size_text(n) == text
