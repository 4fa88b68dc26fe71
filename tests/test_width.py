"""WidthSpace: validation of alpha and the alpha -> channels mapping."""

import math

import numpy as np
import pytest
import torch

from pareco.width import ChannelGroup, WidthSpace

SPACE = WidthSpace((ChannelGroup("a", 16), ChannelGroup("b", 10), ChannelGroup("c", 3)), 0.316)


def test_channels_round_half_up_and_never_zero():
    assert SPACE.channels(None) == (16, 10, 3)
    assert SPACE.channels(0.5) == (8, 5, 2)  # 1.5 rounds up
    assert SPACE.channels([0.316, 0.316, 0.316]) == (5, 3, 1)
    tiny = WidthSpace((ChannelGroup("x", 1),), 0.1)
    assert tiny.channels(0.1) == (1,)


def test_divisor_rounding_stays_within_full_width():
    space = WidthSpace((ChannelGroup("a", 20), ChannelGroup("b", 96)), 0.42, divisor=8)
    assert space.channels(1.0) == (20, 96)
    assert space.channels([0.42, 0.42]) == (8, 40)
    assert all(c % 8 == 0 for c in space.channels([0.6, 0.77]))


def test_accepts_tensors_numpy_and_scalars():
    a = [0.5, 0.7, 1.0]
    expect = SPACE.channels(a)
    assert SPACE.channels(torch.tensor(a)) == expect
    assert SPACE.channels(np.array(a)) == expect
    assert SPACE.channels(tuple(np.float32(x) for x in a)) == expect
    assert SPACE.channels(torch.tensor(0.5)) == SPACE.channels(0.5)


@pytest.mark.parametrize(
    "alpha, message",
    [
        ([0.5, 0.5], "must have 3 entries"),
        ([0.5, 0.5, 1.2], "outside the width range"),
        ([0.1, 0.5, 0.5], "outside the width range"),
        ([math.nan, 0.5, 0.5], "must be finite"),
        ([math.inf, 0.5, 0.5], "must be finite"),
        (["0.5", 0.5, 0.5], "must be a real number"),
        ("0.5", "must be None, a number or a sequence"),
        (True, "must be None, a number or a sequence"),
        (torch.ones(2, 3), "1-D vector"),
        (object(), "must be None, a number or a sequence"),
    ],
)
def test_invalid_alpha_raises_clear_value_error(alpha, message):
    with pytest.raises(ValueError, match=message):
        SPACE.channels(alpha)


def test_batch_channels_match_scalar_mapping():
    alphas = SPACE.sample(200, torch.Generator().manual_seed(0))
    batch = SPACE.channels_batch(alphas)
    for row, alpha in zip(batch, alphas):
        assert tuple(int(c) for c in row) == SPACE.channels(alpha)


def test_sampling_stays_in_bounds_and_is_seeded():
    a = SPACE.sample(500, torch.Generator().manual_seed(1))
    b = SPACE.sample(500, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.min() >= SPACE.lower and a.max() <= 1.0
    u = SPACE.sample_uniform_widths(50, torch.Generator().manual_seed(2))
    assert torch.all(u == u[:, :1])


def test_round_trip_through_dict():
    assert WidthSpace.from_dict(SPACE.to_dict()) == SPACE
    with pytest.raises(ValueError, match="lower bound"):
        WidthSpace((ChannelGroup("a", 4),), 0.0)
