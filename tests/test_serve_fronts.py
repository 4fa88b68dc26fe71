"""This host's latency front: which configs are served, how budgets route, what /configs says.

The policy (:mod:`serve.fronts`, :mod:`serve.selection`) is tested on fixed latency tables; the
server end to end with its latency measurement replaced by a fixed table, so that a weight-file
candidate is faster and more accurate than a front config *by construction* (on a real host
that is what blocked kernels do to MFLOPs-chosen widths).
"""

import pytest

import serve.server
from serve.fronts import dominated_by, latency_front, served_configs
from serve.model import ServedConfig
from serve.selection import BudgetError, select
from tinymodel import write_tiny_zoo_model

from test_serve import png, serving


def cfg(cid, macs, acc, on_front=True):
    return ServedConfig(cid, (1.0,), (8,), macs, 100, val_acc=acc, on_front=on_front)


FRONT = (cfg("c00", 1_000_000, 0.70), cfg("c01", 2_000_000, 0.80), cfg("c02", 3_000_000, 0.90))
OTHERS = (cfg("k00", 2_500_000, 0.85, False), cfg("k01", 1_500_000, 0.60, False))
LAT = {"c00": 1.0, "c01": 2.5, "c02": 3.0, "k00": 2.0, "k01": 0.9}


def test_dominated_by_names_the_fastest_config_at_least_as_good():
    everything = FRONT + OTHERS
    assert dominated_by(FRONT[1], everything, LAT).id == "k00"  # faster and more accurate
    assert dominated_by(FRONT[0], everything, LAT) is None      # k01 is faster but worse
    assert dominated_by(FRONT[2], everything, LAT) is None
    tie = {**LAT, "k00": 2.5}  # as fast, more accurate: still dominated
    assert dominated_by(FRONT[1], everything, tie).id == "k00"
    same = cfg("c01b", 2_100_000, 0.80)  # identical latency and accuracy: neither dominates
    assert dominated_by(same, (FRONT[1], same), {"c01": 2.5, "c01b": 2.5}) is None


def test_latency_front_and_served_set():
    lf = latency_front(FRONT + OTHERS, LAT)
    assert [c.id for c in lf] == ["k01", "c00", "k00", "c02"]  # by latency, c01 dropped
    served = served_configs(FRONT, lf)
    assert [c.id for c in served] == ["c00", "k01", "c01", "k00", "c02"]  # by MACs
    twins = (cfg("a", 1, 0.5), cfg("b", 2, 0.5))
    assert [c.id for c in latency_front(twins, {"a": 1.0, "b": 1.0})] == ["a"]  # cheaper kept


def test_budgets_route_on_their_own_front():
    served = served_configs(FRONT, latency_front(FRONT + OTHERS, LAT))
    assert select(served, LAT, max_latency_ms=2.6).id == "k00"  # not c01: slower and worse
    assert select(served, LAT, max_latency_ms=0.95).id == "k01"
    assert select(served, LAT, mflops=2.6).id == "c01"  # mflops= keeps the weight file's front
    assert select(served, LAT).id == "c02"
    with pytest.raises(BudgetError, match="c00 needs 1.0 MFLOPs"):
        select(served, LAT, mflops=0.5)
    with pytest.raises(BudgetError, match="k01 takes 0.9 ms"):
        select(served, LAT, max_latency_ms=0.5)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("fronts") / "model.safetensors"
    mid = [0.5, 0.7, 0.5, 0.7, 0.5, 0.7]
    return write_tiny_zoo_model(path, size=16, middle=mid, n_images=16, candidates=[
        ([0.6, 0.8, 0.6, 0.8, 0.6, 0.8], 0.85), ([0.4, 0.5, 0.4, 0.5, 0.4, 0.5], 0.60)])


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_server_serves_and_reports_this_hosts_latency_front(weights, backend, monkeypatch):
    table = {"c00": 1.0, "c01": 2.5, "c02": 3.0, "k00": 2.0, "k01": 1.2}  # c01 by k00, k01 by c00
    timed = []

    def fixed(runners, shape, **kw):
        timed.append(sorted(runners))
        return {cid: table[cid] for cid in runners}

    monkeypatch.setattr(serve.server, "measure_latencies_ms", fixed)
    with serving(weights, backend=backend, threads=1) as app:
        body = app.get("/configs").json()
        assert timed[0] == ["c00", "c01", "c02", "k00", "k01"]  # every calibrated config timed
        assert body["calibrated"] == 5
        assert [c["id"] for c in body["configs"]] == ["c00", "c01", "k00", "c02"]  # k01 dropped
        assert body["latency_front"] == ["c00", "k00", "c02"]
        info = {c["id"]: c for c in body["configs"]}
        assert info["c01"]["latency_dominated_by"] == "k00" and not info["c01"]["on_latency_front"]
        assert info["k00"]["on_latency_front"] and not info["k00"]["on_mflops_front"]
        assert info["c02"]["latency_dominated_by"] is None and info["c02"]["on_mflops_front"]

        def chosen(**params):
            r = app.post(params=params, files=[("file", ("a.png", png(1), "image/png"))])
            assert r.status_code == 200, r.text
            return r.json()["config"]

        k00 = chosen(latency_ms=2.6)
        assert k00["id"] == "k00" and k00["expected_accuracy"] == pytest.approx(0.85)
        assert chosen(mflops=info["k00"]["mflops"] + 0.001)["id"] == "c01"
        assert chosen()["id"] == "c02"
        assert app.post("/configs/profile").status_code == 200
        assert timed[1] == ["c00", "c01", "c02", "k00"]  # re-measures the served configs
