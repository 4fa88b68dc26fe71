"""``bench/serving.py --quick`` end to end on a tiny weight file: every section, positive numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinymodel import write_tiny_zoo_model

REPO = Path(__file__).resolve().parents[1]
SIZE = 12


def positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0 and x == x


@pytest.mark.slow
def test_quick_serving_benchmark_writes_every_section(tmp_path):
    weights = write_tiny_zoo_model(tmp_path / "model.safetensors", size=SIZE)
    out = tmp_path / "serving.json"
    env = os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serving.py"), "--quick", "--weights", str(weights),
         "--out", str(out), "--threads", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Targets" in proc.stdout and ("PASS" in proc.stdout or "MISS" in proc.stdout)
    res = json.loads(out.read_text())

    env_ = res["environment"]
    assert env_["cpu_model"] and env_["cpu_count"] >= 1 and "serving.py" in env_["command"]
    assert env_["versions"]["onnxruntime"] and env_["threads"]["server_intra_op_threads"] == 1
    assert res["session_options"]["intra_op_num_threads"] == 1
    assert set(res["servers"]) == {"default", "nobatch"}
    assert max(res["parity_max_abs_diff_runner_vs_bare"].values()) < 1e-4

    lat = res["latency"]
    assert lat["iterations"] >= 3 and lat["error_count"] == 0
    assert set(lat["configs"]) == {"c00", "c01"}
    for b in ("1", "32"):
        assert positive(lat["preprocess"][b]["p50"])
    for d in lat["configs"].values():
        for b in ("1", "32"):
            for stats in (d["bare"][b], d["runner"][b], *(d["http"][v][b] for v in res["servers"])):
                assert positive(stats["p50"]) and stats["p90"] >= stats["p50"]

    cells = res["throughput"]["cells"]
    assert {(c["variant"], c["clients"]) for c in cells} == {
        (v, n) for v in ("default", "nobatch") for n in (1, 8, 32)}
    for c in cells:
        assert positive(c["images_per_s"]) and positive(c["latency_ms"]["p50"])
        assert set(c["statuses"]) == {"200"}

    sw = res["switching"]
    assert set(sw["targets"]) == {"runner", "default", "nobatch"}
    for d in sw["targets"].values():
        for cid in (sw["a"], sw["b"]):
            assert positive(d[cid]["repeat"]["p50"]) and positive(d[cid]["alternate"]["p50"])

    sp = res["speedup"]
    assert (sp["largest"], sp["smallest"]) == ("c01", "c00") and sp["mflops_ratio"] > 5
    assert all(positive(v) for v in sp["latency_p50_ratio"].values())

    names = {t["name"] for t in res["targets"]}
    assert {"runner_vs_bare_ort", "http_adds_b1[default]"} <= names
    assert any(n.startswith("microbatching_gain_32clients[default") for n in names)
    assert all(isinstance(t["pass"], bool) and t["measured"] == t["measured"] for t in res["targets"])


@pytest.mark.slow
def test_slo_scenario_measures_both_modes_side_by_side(tmp_path):
    """``--only slo`` (issue 14): fixed full width vs --slo-ms at 1/32/128/256 clients (a
    generous objective, so that every cell serves something even on a busy test machine)."""
    weights = write_tiny_zoo_model(tmp_path / "model.safetensors", size=SIZE)
    out = tmp_path / "slo.json"
    env = os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        "PARECO_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serving.py"), "--only", "slo", "--weights",
         str(weights), "--out", str(out), "--threads", "1", "--window-s", "0.4", "--rounds", "1",
         "--slo-ms", "1000", "--slo-rate", "200"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SLO targets" in proc.stdout and "slo/fixed" in proc.stdout
    res = json.loads(out.read_text())
    slo = res["slo"]
    assert slo["slo_ms"] == 1000 and positive(slo["idle_full_width_p50_ms"])
    assert "--slo-ms" in slo["servers"]["slo"] and "--slo-ms" not in slo["servers"]["fixed"]
    for mode in ("fixed", "smallest", "slo"):
        for n in ("1", "32", "128", "256", "128@200/s", "256@200/s"):
            c = slo["cells"][mode][n]
            assert set(c["statuses"]) <= {"200", "503"} and c["requests"] > 0
            assert positive(c["accepted_per_s"]) and c["p99_ms"] >= c["p50_ms"] > 0
            assert 0.6 <= c["mean_expected_accuracy"] <= 0.8  # the tiny model's test accuracies
            assert sum(c["chosen"].values()) == c["statuses"]["200"]
            assert len(c["load_average"]) == 2
    for c in slo["cells"]["slo"].values():  # timed by the server within P (its bucket at P)
        assert c["server_within_slo"] >= 0.99 and 0 <= c["client_within_slo"] <= 1
    assert all(c["server_within_slo"] is None for c in slo["cells"]["fixed"].values())
    assert set(slo["cells"]["fixed"]["1"]["chosen"]) == {"c01"}  # fixed: always full width
    assert slo["smallest"]["id"] == "c00"  # the cheapest config, on the same server
    assert all(set(c["chosen"]) == {"c00"} for c in slo["cells"]["smallest"].values())
    assert all(positive(r["width_ceiling"]) for r in slo["ratios_slo_vs_fixed"].values())
    assert {t["name"] for t in slo["targets"]} >= {"slo_p99[128]", "slo_503_share[256@200/s]",
                                                   "slo_throughput_ratio[256]"}
    paced = slo["cells"]["fixed"]["256@200/s"]
    assert paced["requests"] <= 200 * paced["seconds"] * 1.5  # offered, not closed-loop
    assert all(positive(r["throughput"]) for r in slo["ratios_slo_vs_fixed"].values())
    assert res["uptime_after"] and "load average" in res["uptime_after"]
