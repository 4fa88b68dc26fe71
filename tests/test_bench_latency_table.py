"""The front comparison helpers of ``bench/latency_table.py`` on hand-made points."""

from __future__ import annotations

import pytest

from bench.latency_table import area, divisor_rounded, dominated_share, front_of
from pareco import models


def test_divisor_rounding_stays_in_the_trained_range() -> None:
    space = models.build("resnet20", num_classes=10, in_channels=1, image_size=16).width_space
    rounded = divisor_rounded(space, [space.smallest, space.full, space.smallest], 8)
    assert len(rounded) == 2  # duplicates dropped
    assert [space.channels(a) for a in rounded] == [(8, 8, 16, 16, 24, 24),
                                                    (16, 16, 32, 32, 64, 64)]
    assert all(space.validate(a) == a for a in rounded)  # 16/32, not 8/32 < 0.316


def test_fronts_dominance_and_area() -> None:
    a = front_of([(1.0, 0.80), (2.0, 0.90), (2.5, 0.85), (3.0, 0.91)])
    assert a == [(1.0, 0.80), (2.0, 0.90), (3.0, 0.91)]
    b = [(0.9, 0.80), (2.0, 0.905)]
    assert dominated_share(a, b) == pytest.approx(2 / 3)  # (1.0, .80) and (2.0, .90)
    assert dominated_share(b, a) == 0.0
    assert area(b, 1.0, 3.0) > area(a, 1.0, 3.0)
    assert area([(2.0, 0.9)], 1.0, 3.0) == pytest.approx(0.45, abs=1e-3)  # 0 below the front
