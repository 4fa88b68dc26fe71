"""SLO mode (issue 14, part 4): the policy with a fake clock and fake runners, then the real
server under real concurrent load.

The policy tests drive :class:`serve.slo.SloPolicy` through a discrete-event simulation: fake
configurations whose batches take a known time, micro-batched like :mod:`serve.batching`
(batches of at most ``max_batch``, a lone request runs at once), and a fake clock that is the
simulated time. No sleeps, no wall-clock measurements.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import Counter, deque

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from liveserver import live_server
from serve.__main__ import main
from serve.admission import hold_s
from serve.metrics import latency_buckets
from serve.model import ServedConfig
from serve.settings import Settings
from serve.slo import (LoopLag, QueueState, ServiceTimes, SloPolicy, cpu_stretch,
                       estimate_images, within_budget)
from serve.slo_limit import InflightLimit
from tinymodel import write_tiny_zoo_model


def config(cid: str, mflops: float, acc: float) -> ServedConfig:
    return ServedConfig(cid, (1.0,), (8,), int(mflops * 1e6), 1000, val_acc=acc, test_acc=acc)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def policy(latency_ms, states, clock, *, slo_ms=5.0, max_batch=8, delay_s=0.0, threads=1,
           cores=8, **kw) -> SloPolicy:
    return SloPolicy(slo_ms, ServiceTimes(latency_ms, max_batch), lambda cid: states[cid],
                     max_batch=max_batch, delay_s=delay_s, threads=threads, cores=cores,
                     clock=clock, **kw)


# ------------------------------------------------------------------------ the pieces
def test_candidates_are_the_latency_front_within_the_budget_most_accurate_first():
    a, b, c, d = (config("a", 3, 0.80), config("b", 10, 0.82), config("c", 15, 0.81),
                  config("d", 31, 0.90))
    lat = {"a": 0.5, "b": 0.8, "c": 1.0, "d": 0.9}  # c: slower and less accurate than b and d
    p = policy(lat, {}, FakeClock())
    assert p.candidates([a, b, c, d], lat, None, None) == (d, b, a)
    assert p.candidates([a, b, c, d], lat, 16.0, None) == (b, a)  # c dominated by b still
    assert p.candidates([a, c, d], lat, 16.0, None) == (c, a)  # without b, c is on the front
    assert p.candidates([a, b, c, d], lat, None, 0.85) == (b, a)
    assert within_budget([a, b, c, d], lat, 12.0, None) == [a, b]
    assert within_budget([a, b, c, d], lat, None, 0.85) == [a, b]
    assert within_budget([a, b, c, d], lat, None, None) == [a, b, c, d]


def test_image_count_is_estimated_from_the_multipart_delimiters():
    body = b"--xx\r\n...\r\n--xx\r\n...\r\n--xx--\r\n"
    assert estimate_images(body, b"xx", 64) == 2
    assert estimate_images(body, b"xx", 1) == 1
    assert estimate_images(b"\x89PNG", None, 64) == 1
    assert estimate_images(b"garbage", b"xx", 64) == 1


def test_service_times_are_seeded_measured_and_normalized_by_the_cpu_stretch():
    t = ServiceTimes({"a": 2.0}, max_batch=32, weight=0.5)
    assert t.batch_s("a", 1) == pytest.approx(0.002)
    assert t.batch_s("a", 4) == pytest.approx(0.008)  # only batch 1 known: per image, linear
    assert t.batch_s("a", 0) == 0
    t.observe("a", 4, 0.012, stretch=2.0)  # 6 ms alone for 4 images
    assert t.batch_s("a", 4) == pytest.approx(0.006)
    assert t.batch_s("a", 6) == pytest.approx(0.009)  # same bucket [4, 8), per image
    assert t.batch_s("a", 1) == pytest.approx(0.002)  # its own bucket still
    t.observe("a", 4, 0.010)  # EWMA with weight 0.5: (6 + 10) / 2
    assert t.batch_s("a", 4) == pytest.approx(0.008)
    assert t.batch_s("a", 32) == pytest.approx(0.064)  # from the nearest measured bucket
    assert cpu_stretch(1, 1, 2) == 1 and cpu_stretch(4, 1, 2) == 2 and cpu_stretch(3, 2, 2) == 3
    with pytest.raises(ValueError, match="weight"):
        ServiceTimes({"a": 1.0}, 8, weight=0)


def test_prediction_counts_the_running_batch_the_queue_the_delay_and_shared_cores():
    states = {"a": QueueState(), "b": QueueState()}
    clock = FakeClock()
    p = policy({"a": 1.0, "b": 2.0}, states, clock, max_batch=4, delay_s=0.003, cores=1)
    assert p.predict_s("a", 1, states) == pytest.approx(0.001)  # idle: one batch-1 call
    states["a"] = QueueState(queued_images=5, running_images=2, running_for_s=0.0005)
    # rest of the running batch 2 ms - 0.5; then 5 + 1 images in batches of <= 4: 4 ms + 2 ms
    assert p.predict_s("a", 1, states) == pytest.approx(0.0015 + 0.006)
    states["a"] = QueueState(queued_images=1, preparing=2)  # + the delay, 1 image per preparer
    assert p.predict_s("a", 1, states) == pytest.approx(0.004 + 0.003)
    states["b"] = QueueState(running_images=1)  # b busy too: 2 configs on 1 core, stretch 2
    assert p.predict_s("a", 1, states) == pytest.approx(2 * 0.004 + 0.003)


def test_choose_degrades_width_before_it_sheds_and_says_why():
    small, mid, big = config("s", 3, 0.80), config("m", 10, 0.85), config("b", 31, 0.90)
    lat = {"s": 0.5, "m": 1.0, "b": 2.0}
    states = {cid: QueueState() for cid in lat}
    clock = FakeClock()
    p = policy(lat, states, clock, slo_ms=5.0)
    cands = p.candidates([small, mid, big], lat, None, None)
    assert cands == (big, mid, small)
    assert p.candidates([small, mid, big], lat, 12.0, None) == (mid, small)  # the budget holds
    assert p.choose(cands, 1, clock.now).config == big
    states["b"] = QueueState(running_images=1)  # 2 ms running + 2 ms for this one
    assert p.choose(cands, 1, clock.now - 0.0005).config == big  # 0.5 + 4 ms <= 5
    assert p.choose(cands, 1, clock.now - 0.0015).config == mid  # 1.5 + 4 > 5: degrade
    states["m"] = QueueState(queued_images=3)  # 1.5 + 4 ms
    assert p.choose(cands, 1, clock.now - 0.0015).config == small
    states["s"] = QueueState(queued_images=8)  # 1.5 + (8 images: 4 ms) + (1: 0.5 ms)
    shed = p.choose(cands, 1, clock.now - 0.0015)
    assert shed.config is None and shed.nearest == big and shed.total_s == pytest.approx(0.0055)
    assert p.shed_detail(shed) == (
        "overloaded: no configuration within the budget is predicted to answer within the 5 ms "
        "latency objective (--slo-ms); the soonest, b, in 5.5 ms; retry later")


def test_hopeless_only_when_no_configuration_at_all_can_answer_in_time():
    lat = {"s": 0.5, "b": 2.0}
    states = {cid: QueueState() for cid in lat}
    clock = FakeClock()
    lag = [0.0]
    p = policy(lat, states, clock, slo_ms=5.0, lag=lambda: lag[0])
    assert not p.hopeless()
    states["s"] = QueueState(queued_images=16)  # s: 8 ms of queue; b idle still answers in 2
    assert not p.hopeless()
    states["b"] = QueueState(queued_images=2)   # b: 3 x 2 ms = 6 ms > 5 as well
    assert p.hopeless()
    states["s"] = QueueState()
    assert not p.hopeless()
    lag[0] = 0.0046  # 4.6 + 0.5 ms > 5: the lag alone makes it hopeless
    assert p.hopeless()


def test_refusal_holds_are_spread_over_half_to_one_and_a_half_the_delay():
    rng = random.Random(0)
    holds = [hold_s(1.0, rng) for _ in range(2000)]
    assert 0.5 <= min(holds) < 0.52 and 1.48 < max(holds) <= 1.5
    assert np.mean(holds) == pytest.approx(1.0, abs=0.02)
    assert hold_s(0.0, rng) == 0.0


def test_the_event_loop_lag_counts_against_the_objective():
    states = {"a": QueueState()}
    clock = FakeClock()
    a = config("a", 3, 0.8)
    lag = [0.0]
    p = policy({"a": 1.0}, states, clock, slo_ms=5.0, lag=lambda: lag[0])
    assert p.choose((a,), 1, clock.now).config == a
    lag[0] = 0.0045  # 4.5 + 1 ms > 5
    assert p.choose((a,), 1, clock.now).config is None


def test_loop_lag_sees_a_blocked_event_loop():
    async def go():
        lag = LoopLag(interval_s=0.001, keep=50)
        lag.start()
        await asyncio.sleep(0.02)
        time.sleep(0.05)  # the loop is blocked: the next wake-up is at least 49 ms late
        await asyncio.sleep(0.01)
        return lag.lag_s()
    assert asyncio.run(go()) >= 0.04


def test_the_margin_is_the_p99_of_recent_errors_capped_at_half_the_objective_and_expires():
    states = {"a": QueueState()}
    clock = FakeClock()
    p = policy({"a": 1.0}, states, clock, slo_ms=5.0, window_s=10.0, min_samples=20)
    a = config("a", 3, 0.8)
    for i in range(100):
        choice = p.choose((a,), 1, clock.now)
        assert choice.config == a
        clock.now += 0.001 + (0.003 if i % 10 == 0 else 0.0005)  # 1 ms predicted, +0.5..3 ms
        p.finished(choice)
    assert p.margin_s() == pytest.approx(np.quantile([0.003] * 10 + [0.0005] * 90, 0.99))
    assert p.choose((a,), 1, clock.now - 0.0021).config is None  # 2.1 + 1 + 2.5 > 5
    assert p.choose((a,), 1, clock.now - 0.0014).config == a  # the margin is capped at P / 2
    assert not p.hopeless()  # nor does it count there: 1 ms alone fits
    clock.now += 10.5  # the errors are out of the window: the margin decays (time constant 10 s)
    assert 0.0005 < p.margin_s() < 0.0015 and p.choose((a,), 1, clock.now - 0.0015).config == a
    clock.now += 120
    assert 0 < p.margin_s() < 1e-7


def test_answered_requests_feed_their_latency_and_the_lag_to_the_inflight_limit():
    states = {"a": QueueState()}
    clock, lag = FakeClock(), [0.0]
    limit = InflightLimit(0.005, 8, every=16)
    p = SloPolicy(5.0, ServiceTimes({"a": 1.0}, 8), lambda cid: states[cid], max_batch=8,
                  delay_s=0.0, threads=1, cores=1, clock=clock, lag=lambda: lag[0], limit=limit)
    a = config("a", 3, 0.8)
    for _ in range(16):  # 4.5 ms in the app: within P
        choice = p.choose((a,), 1, clock.now)
        clock.now += 0.0045
        p.finished(choice)
    assert limit.limit == 8
    lag[0] = 0.001  # plus 1 ms before the app: 5.5 ms > P
    for _ in range(16):
        choice = p.choose((a,), 1, clock.now - 0.001)
        clock.now += 0.0035
        p.finished(choice)
    assert limit.limit == 6


def test_the_objective_is_a_bucket_bound_of_the_latency_histograms():
    assert latency_buckets() == tuple(sorted(latency_buckets()))
    with_p = latency_buckets(13.1)
    assert 13.1 / 1e3 in with_p and set(latency_buckets()) < set(with_p)
    assert with_p == tuple(sorted(with_p)) and latency_buckets(10.0) == latency_buckets()


def test_bad_objectives_are_refused_with_what_is_accepted(capsys):
    with pytest.raises(ValueError, match="slo_ms must be a finite number of milliseconds > 0"):
        Settings(slo_ms=0)
    with pytest.raises(ValueError, match="slo_ms must be"):
        Settings(slo_ms=float("nan"))
    with pytest.raises(ValueError, match="slo_ms must be > 0"):
        SloPolicy(-1, ServiceTimes({}, 1), lambda c: QueueState(), max_batch=1, delay_s=0,
                  threads=1, cores=1)
    for bad in ("0", "-3", "inf"):
        with pytest.raises(SystemExit) as e:
            main(["--slo-ms", bad])
        assert e.value.code == 2
        assert "--slo-ms must be a finite number of milliseconds > 0" in capsys.readouterr().err


# ------------------------------------------------------------- a simulated server under load
class FakeRunner:
    """One configuration's micro-batcher and runner in simulated time: batches of at most
    ``max_batch`` images take ``fixed + per_image * n`` seconds; a request arriving while the
    runner is idle starts at once, otherwise it waits for the next batch."""

    def __init__(self, fixed: float, per_image: float, max_batch: int) -> None:
        self.fixed, self.per_image, self.max_batch = fixed, per_image, max_batch
        self.queue: deque = deque()
        self.batch: list = []
        self.started = 0.0

    def state(self, now: float) -> QueueState:
        return QueueState(len(self.queue), 0, len(self.batch), now - self.started if self.batch
                          else 0.0)

    def start(self, now: float) -> float | None:
        """Start the next batch if idle; its end time."""
        if self.batch or not self.queue:
            return None
        while self.queue and len(self.batch) < self.max_batch:
            self.batch.append(self.queue.popleft())
        self.started = now
        return now + self.fixed + self.per_image * len(self.batch)


def simulate(rate_per_s: float, n: int = 3000, slo_ms: float = 5.0, seed: int = 0,
             warm: int = 300) -> dict:
    """``warm`` then ``n`` one-image requests, Poisson arrivals at 100/s then ``rate_per_s``,
    against three fake configs (capacity with batches of 8: big ~480/s, mid ~1190/s, small
    ~3080/s, each on its own core); figures of the ``n`` (the warm-up calibrates the model)."""
    runners = {"s": FakeRunner(0.0002, 0.0003, 8), "m": FakeRunner(0.0003, 0.0008, 8),
               "b": FakeRunner(0.0005, 0.0020, 8)}
    configs = [config("s", 3, 0.80), config("m", 10, 0.85), config("b", 31, 0.90)]
    seed_ms = {cid: (r.fixed + r.per_image) * 1e3 for cid, r in runners.items()}
    clock = FakeClock()
    limit = InflightLimit(slo_ms / 1e3, 256)
    p = SloPolicy(slo_ms, ServiceTimes(seed_ms, 8), lambda cid: runners[cid].state(clock.now),
                  max_batch=8, delay_s=0.0, threads=1, cores=3, clock=clock, limit=limit)
    cands = p.candidates(configs, seed_ms, None, None)
    rng = np.random.default_rng(seed)
    gaps = np.concatenate([rng.exponential(1 / 100, warm), rng.exponential(1 / rate_per_s, n)])
    events = [(clock.now + t, 0, i, None) for i, t in enumerate(np.cumsum(gaps))]
    heapq.heapify(events)
    latencies, chosen, shed, inflight = [], Counter(), 0, 0
    while events:
        clock.now, kind, i, cid = heapq.heappop(events)
        if kind == 0:  # arrival: admission (the learned limit), then the width choice
            choice = p.choose(cands, 1, clock.now) if limit.admits(inflight) else None
            if choice is None or choice.config is None:
                shed += i >= warm
                continue
            inflight += 1
            cid = choice.config.id
            chosen[cid] += i >= warm
            runners[cid].queue.append((clock.now, choice, i >= warm))
        else:  # a batch of cid ended
            r = runners[cid]
            p.observe_batch(cid, len(r.batch), clock.now - r.started)
            done, r.batch = r.batch, []
            for arrived, choice, measured in done:
                if measured:
                    latencies.append(clock.now - arrived)
                p.finished(choice)
                inflight -= 1
        end = runners[cid].start(clock.now)
        if end is not None:
            heapq.heappush(events, (end, 1, i, cid))
    return {"p99_ms": float(np.quantile(latencies, 0.99)) * 1e3, "chosen": chosen, "shed": shed,
            "accepted": len(latencies)}


def test_light_load_is_served_at_full_width():
    r = simulate(100)  # mid only when two requests come within the full width's 2.5 ms
    assert r["shed"] == 0 and r["p99_ms"] <= 5.0 and r["chosen"]["b"] > 0.95 * 3000


def test_above_full_width_capacity_it_degrades_width_and_sheds_nothing():
    r = simulate(1500)  # 3 x what the full width alone can serve
    assert r["shed"] == 0 and r["p99_ms"] <= 5.0
    assert r["chosen"]["b"] > 0 and r["chosen"]["m"] + r["chosen"]["s"] > 1500


def test_beyond_every_config_it_sheds_and_holds_the_p99_of_accepted_requests():
    r = simulate(20000)  # above all three together (~4750/s)
    assert r["shed"] > 0 and r["p99_ms"] <= 5.0
    assert r["chosen"]["s"] > r["chosen"]["b"]


# ---------------------------------------------------------- the real server, real concurrency
def slo_server(weights, **settings):
    """:func:`liveserver.live_server` with the shipped batch delay, room for 64 requests in
    progress and refusals answered at once, plus ``settings``."""
    return live_server(weights, **({"batch_delay_ms": Settings().batch_delay_ms,
                                    "max_inflight": 64, "reject_delay_ms": 0} | settings))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_tiny_zoo_model(tmp_path_factory.mktemp("slo") / "model.safetensors", size=16,
                                middle=[0.5, 0.7, 0.5, 0.7, 0.5, 0.7])


def png_bytes(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def fire(base: str, n: int) -> list[httpx.Response]:
    """``n`` concurrent one-image requests on ``n`` connections."""
    async def go():
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post(
                "/predict", content=png_bytes(i), headers={"content-type": "image/png"})
                for i in range(n)))
    return asyncio.run(go())


def metrics(base: str) -> dict:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
            for s in fam.samples}


@pytest.mark.slow
def test_with_a_huge_objective_every_request_gets_the_most_accurate_config(weights):
    with slo_server(weights, slo_ms=1e6) as base:
        best = max(httpx.get(f"{base}/configs").json()["configs"], key=lambda c: c["val_acc"])
        answers = fire(base, 32)
        assert [r.status_code for r in answers] == [200] * 32
        assert {r.json()["config"]["id"] for r in answers} == {best["id"]}
        m = metrics(base)
        assert m[("pareco_chosen_config_total", frozenset({("config", best["id"]),
                                                           ("mode", "slo")}))] == 32
        assert m[("pareco_served_expected_accuracy_count", frozenset())] == 32
        assert m[("pareco_served_expected_accuracy_sum", frozenset())] == pytest.approx(
            32 * best["test_acc"])
        assert m[("pareco_slo_objective_seconds", frozenset())] == 1e3
        at_p = [v for (name, labels), v in m.items()  # the objective is a histogram bound
                if name == "pareco_http_request_duration_seconds_bucket"
                and dict(labels).get("endpoint") == "/predict" and float(dict(labels)["le"]) == 1e3]
        assert at_p == [32]
        assert m[("pareco_event_loop_lag_seconds", frozenset())] >= 0
        assert m[("pareco_slo_inflight_limit", frozenset())] == 64  # never late: never lowered
        assert ("pareco_overload_rejections_total", frozenset({("reason", "slo")})) not in m


@pytest.mark.slow
def test_with_a_tiny_objective_under_load_it_degrades_width_or_sheds_with_retry_after(weights):
    with slo_server(weights, slo_ms=1.0) as base:
        configs = httpx.get(f"{base}/configs").json()["configs"]
        best = max(configs, key=lambda c: c["val_acc"])["id"]
        answers = fire(base, 48)
        codes = Counter(r.status_code for r in answers)
        assert set(codes) <= {200, 503}
        served = Counter(r.json()["config"]["id"] for r in answers if r.status_code == 200)
        assert codes[503] > 0 or set(served) - {best}  # not everything at full width
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert "1 ms latency objective (--slo-ms)" in r.json()["detail"]
        m = metrics(base)
        assert m.get(("pareco_overload_rejections_total", frozenset({("reason", "slo")})),
                     0) == codes[503]
        mix = {cid: m.get(("pareco_chosen_config_total", frozenset({("config", cid),
                                                                   ("mode", "slo")})), 0)
               for cid in (c["id"] for c in configs)}
        assert mix == {cid: served.get(cid, 0) for cid in mix}


@pytest.mark.slow
def test_an_objective_no_configuration_can_meet_is_refused_by_the_http_layer(weights):
    with slo_server(weights, slo_ms=0.001) as base:  # 1 us: below every batch-1 latency
        answers = fire(base, 4)
        assert [r.status_code for r in answers] == [503] * 4
        for r in answers:  # the HTTP layer's answer (the route's names the soonest config)
            assert r.json()["detail"] == ("overloaded: no configuration can answer within the "
                                          "0.001 ms latency objective (--slo-ms) now; retry later")
            assert r.headers["retry-after"] == "1"
        m = metrics(base)
        assert m[("pareco_overload_rejections_total", frozenset({("reason", "slo")}))] == 4
        assert m[("pareco_http_requests_total", frozenset({("endpoint", "/predict"),
                                                           ("method", "POST"),
                                                           ("status", "503")}))] == 4


@pytest.mark.slow
def test_without_an_objective_the_budget_alone_chooses(weights):
    with slo_server(weights) as base:
        answers = fire(base, 8)
        assert [r.status_code for r in answers] == [200] * 8
        best = answers[0].json()["config"]
        m = metrics(base)
        assert m[("pareco_chosen_config_total", frozenset({("config", best["id"]),
                                                           ("mode", "budget")}))] == 8
        assert ("pareco_slo_objective_seconds", frozenset()) not in m
