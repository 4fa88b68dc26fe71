"""SLO mode's learned in-flight limit (:mod:`serve.slo_limit`) and how admission applies it."""

from __future__ import annotations

import pytest

from serve.admission import Admission
from serve.slo_limit import InflightLimit

P = 0.010  # the objective, s


def answer(limit: InflightLimit, latency_s: float, n: int) -> None:
    for _ in range(n):
        limit.observe(latency_s)


def test_late_answers_shrink_the_limit_once_per_update_on_fresh_answers_only():
    limit = InflightLimit(P, 8, every=16)
    answer(limit, 0.9 * P, 15)
    answer(limit, 2 * P, 1)  # p99 of 16 answers, one of them late: above P
    assert limit.limit == 6  # 8 x 0.75
    answer(limit, 0.5 * P, 16)  # the late answer was forgotten with the change
    assert limit.limit == 6  # on time, but the limit was never reached: no growth
    answer(limit, 2 * P, 16 * 10)
    assert limit.limit == 1  # falls by at least 1 per update, never below 1


def test_the_limit_grows_by_one_only_when_reached_and_well_within_the_objective():
    limit = InflightLimit(P, 10, initial=4, every=16)
    assert limit.admits(2) and not limit.admits(4)  # a refusal: the limit was reached
    answer(limit, 0.5 * P, 16)
    assert limit.limit == 5
    assert limit.admits(4)  # the 5th in progress: reached again
    answer(limit, 0.9 * P, 16)  # on time but above the 0.8 x P headroom: hold
    assert limit.limit == 5
    for _ in range(20):
        assert not limit.admits(limit.limit)
        answer(limit, 0.1 * P, 16)
    assert limit.limit == 10  # capped at the maximum


def test_bad_settings_are_refused_with_what_is_accepted():
    with pytest.raises(ValueError, match="slo_s must be > 0"):
        InflightLimit(0, 4)
    with pytest.raises(ValueError, match="1 <= initial <= maximum"):
        InflightLimit(P, 4, initial=5)
    with pytest.raises(ValueError, match="backoff must be in"):
        InflightLimit(P, 4, backoff=1.0)


def test_admission_refuses_at_the_learned_limit_as_slo_and_says_why():
    refusals = []
    admission = Admission(8, lambda reason, early: refusals.append((reason, early)))
    limit = InflightLimit(P, 8, initial=2)
    admission.watch_slo(lambda: False, 10, limit)
    assert admission.enter() and admission.enter()
    assert admission.early_refusal() is not None  # the HTTP layer refuses at the limit too
    assert not admission.enter()
    assert refusals == [("slo", False)]
    assert admission.detail == ("overloaded: as many requests in progress as can be answered "
                                "within the 10 ms latency objective (--slo-ms); retry later")
    admission.leave()
    assert admission.early_refusal() is None and admission.enter()


def test_the_static_limit_still_comes_first():
    refusals = []
    admission = Admission(1, lambda reason, early: refusals.append(reason))
    admission.watch_slo(lambda: False, 10, InflightLimit(P, 1))
    assert admission.enter() and not admission.enter()
    assert refusals == ["inflight"] and "the limit is 1" in admission.detail
