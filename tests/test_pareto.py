"""pareco.pareto: non-dominated filtering, eq. (4) areas, area under the front, hypervolume."""

import numpy as np
import pytest
import torch

from pareco.pareto import area_under_front, front_areas, hypervolume_2d, nondominated


def test_nondominated_minimize_both():
    pts = [[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0], [2.5, 3.0]]
    # [3,4] is dominated by [2,3]; [2.5,3] is dominated by [2,3] (equal CE, more FLOPs)
    assert nondominated(pts, [False, False]).tolist() == [0, 1, 3]


def test_nondominated_mixed_directions():
    # (MFLOPs minimized, accuracy maximized)
    pts = np.array([[10.0, 0.80], [20.0, 0.85], [15.0, 0.79], [30.0, 0.85], [40.0, 0.90]])
    assert nondominated(pts, [False, True]).tolist() == [0, 1, 4]
    # flipping both directions turns the front around
    assert nondominated(pts, [True, False]).tolist() == [2, 3, 4]


def test_nondominated_duplicates_keep_first_and_torch_input():
    pts = torch.tensor([[2.0, 2.0], [1.0, 3.0], [2.0, 2.0], [1.0, 3.0], [3.0, 3.0]])
    idx = nondominated(pts, [False, False])
    assert isinstance(idx, np.ndarray)
    assert idx.tolist() == [0, 1]
    assert pts[idx].tolist() == [[2.0, 2.0], [1.0, 3.0]]


def test_nondominated_three_objectives_and_chunking():
    rng = np.random.default_rng(0)
    pts = rng.random((1100, 3))  # more rows than one comparison chunk (1024)
    idx = set(nondominated(pts, [False, False, False]).tolist())
    brute = {i for i in range(len(pts))
             if not any((pts[j] <= pts[i]).all() and (pts[j] < pts[i]).any() for j in range(len(pts)))}
    assert idx == brute


def test_nondominated_rejects_bad_input():
    with pytest.raises(ValueError, match="columns"):
        nondominated([[1.0, 2.0]], [False])
    with pytest.raises(ValueError, match="NaN"):
        nondominated([[1.0, float("nan")]], [False, False])


def test_front_areas_hand_example():
    # front F: 0.3 < 0.5 < 0.9, CE: 2.0 > 1.0 > 0.5; (0.6, 1.5) is dominated
    flops = np.array([0.5, 0.9, 0.3, 0.6])
    ce = np.array([1.0, 0.5, 2.0, 1.5])
    fa = front_areas(flops, ce)
    assert fa.index.tolist() == [2, 0, 1]
    # only intervals between front points: nothing beyond the ends (paper eq. 4)
    np.testing.assert_allclose(fa.bounds, [[0.3, 0.5], [0.5, 0.9]])
    np.testing.assert_allclose(fa.areas, [0.2 * 1.0, 0.4 * 0.5])


def test_front_areas_single_point_and_torch():
    fa = front_areas(torch.tensor([0.4]), torch.tensor([1.0]))
    assert isinstance(fa.areas, torch.Tensor)
    assert fa.areas.shape == (0,) and fa.bounds.shape == (0, 2)
    fa = front_areas([0.2, 1.0], [2.0, 1.0])
    np.testing.assert_allclose(fa.areas, [0.8])


def test_area_under_front_staircase():
    # budgets [0,1): nothing fits -> 0; [1,2): 0.5; [2,3): 0.7; [3,4]: still 0.7 (0.6 is worse)
    assert area_under_front([1.0, 2.0, 3.0], [0.5, 0.7, 0.6], 0.0, 4.0) == pytest.approx(
        (0 + 0.5 + 0.7 + 0.7) / 4)
    # the range clips the staircase; a config above hi contributes nothing
    assert area_under_front(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([0.5, 0.7, 0.99]),
                            1.5, 3.5) == pytest.approx((0.5 * 0.5 + 0.7 * 1.5) / 2)
    assert area_under_front([], [], 0.0, 1.0) == 0.0


def test_hypervolume_2d():
    pts = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]]  # last one dominated
    assert hypervolume_2d(pts, [4.0, 4.0], [False, False]) == pytest.approx(3 + 2 + 1)
    # (MFLOPs min, acc max) with ref (10, 0): rectangles 2*(0.5) + 5*(0.8-0.5)... as staircase
    pts = [[5.0, 0.5], [8.0, 0.8]]
    assert hypervolume_2d(pts, [10.0, 0.0], [False, True]) == pytest.approx(5 * 0.5 + 2 * 0.3)
    assert hypervolume_2d([[5.0, 5.0]], [4.0, 4.0], [False, False]) == 0.0
