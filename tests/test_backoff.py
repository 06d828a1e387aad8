"""vcam.backoff: the one doubling retry delay (webcam, OBS bridge, supervisor restarts)."""
from __future__ import annotations

import pytest

from vcam.backoff import Backoff


def test_delays_double_up_to_the_cap_and_reset_starts_over():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


@pytest.mark.parametrize("first, cap", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_bounds_are_rejected(first, cap):
    with pytest.raises(ValueError, match="first_s"):
        Backoff(first, cap)
