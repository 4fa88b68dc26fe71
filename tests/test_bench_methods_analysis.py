"""``bench/methods_analysis.py``: time ratios vs Slim pair only seeds run on the same device."""

from bench.methods_analysis import analyze
from bench.methods_report import markdown

ARCH = {"name": "resnet20", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 28,
                                       "width_factor": 0.25}}


def run(device: str, train_s: float) -> dict:
    front = [{"id": f"c{i}", "mflops": m, "test_acc": a, "val_acc": a, "alpha": [1.0]}
             for i, (m, a) in enumerate(((0.2, 0.8), (1.0, 0.85), (2.0, 0.9)))]
    times = {"wall_s": train_s + 2, "training_s": train_s, "train_s": train_s, "search_s": 0.0,
             "front_s": 2.0}
    return {"front": front, "times": times, "arch": ARCH, "device": device}


def test_gpu_and_cpu_seconds_are_never_divided_by_each_other():
    runs = {"resnet20_quarter": {
        "slim": {0: run("cpu", 4800.0), 1: run("cuda", 300.0), 2: run("cuda", 320.0)},
        "pareco": {0: run("cuda", 330.0), 1: run("cuda", 330.0), 2: run("cuda", 336.0)}}}
    nd = analyze(runs, ["slim", "pareco"])["resnet20_quarter"]
    vs = nd["vs_slim"]["pareco"]
    assert vs["time_ratio_seeds"] == [1, 2]                 # seed 0: Slim on the CPU, PareCO on a GPU
    assert vs["time_ratio_training_s"]["per_seed"] == {1: 1.1, 2: 1.05}
    assert abs(vs["time_ratio_training_s_of_means"] - 666 / 620) < 1e-12
    assert nd["methods"]["slim"]["times_by_device"]["train_s"]["cpu"]["mean"] == 4800.0
    assert nd["methods"]["slim"]["times_by_device"]["train_s"]["cuda"]["mean"] == 310.0
    table = markdown({"networks": {"resnet20_quarter": nd}})
    assert "| slim | 3 |" in table and "cpu: 4800; cuda: 310 ± 14" in table
    assert "| pareco | 3 |" in table and "| 332 ± 3 |" in table   # one device: one figure
