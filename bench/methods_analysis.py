"""Analysis of the methods benchmark: fronts of finished runs -> areas under the front, accuracy at
matched MFLOPs (Table-1 style), times, and paired (same seed) differences and ratios vs Slim."""

from __future__ import annotations

from typing import Any

import numpy as np

SLIMMABLE = ("slim", "pareco", "twostage")
TIME_KEYS = ("wall_s", "training_s", "train_s", "search_s", "front_s")
BUDGET_WIDTHS = (0.316, 0.4, 0.5, 0.625, 0.75, 0.875, 1.0)
"""The matched-MFLOPs budgets are the MFLOPs of these uniform widths of each network."""


def read_run(files: list[str]) -> dict[str, Any]:
    """Front points and timings of one run (independent: every width's single point)."""
    from pareco.weightfile import read_metadata

    points, trainings = [], []
    for f in files:
        meta = read_metadata(f)
        t = meta["training"]
        trainings.append(t)
        for c in meta["front"]:
            points.append({"id": c["id"], "mflops": c["mflops"], "test_acc": c["test_acc"],
                           "val_acc": c["val_acc"], "alpha": c["alpha"],
                           **({"width": t["width"]} if "width" in t else {})})
    points.sort(key=lambda p: p["mflops"])
    keys = ("wall_s", "train_s", "search_s", "front_s")
    times = {k: round(sum(float(t.get(k) or 0.0) for t in trainings), 3) for k in keys}
    times["training_s"] = round(times["train_s"] + times["search_s"], 3)
    t0 = trainings[0]
    doc = {"front": points, "times": times, "steps": sum(int(t.get("steps", 0)) for t in trainings),
           "epochs": t0.get("epochs"), "train_images": t0.get("train_images"),
           "device": t0.get("device"), "threads": t0.get("threads"),
           "arch": read_metadata(files[0])["arch"]}
    search = t0.get("search")
    if search and len(trainings) == 1:
        doc["search"] = search
    return doc


def staircase(points: list[dict], budgets: np.ndarray) -> np.ndarray:
    """Best test accuracy with MFLOPs <= each budget (nan where nothing fits)."""
    m = np.array([p["mflops"] for p in points])
    a = np.array([p["test_acc"] for p in points])
    return np.array([a[m <= b].max() if np.any(m <= b) else np.nan for b in budgets])


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (ddof 1; 0 for one value), min, max and n of finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "values": []}
    return {"n": int(v.size), "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "values": [float(x) for x in v]}


def budgets_of(arch: dict[str, Any]) -> dict[str, float]:
    """MFLOPs of the uniform widths of ``BUDGET_WIDTHS`` for a weight file's architecture."""
    from pareco import models

    net = models.build(arch["name"], **arch["kwargs"])
    space = net.width_space
    return {f"{w:g}": net.macs(space.uniform(max(w, space.lower))) / 1e6 for w in BUDGET_WIDTHS}


def analyze(runs: dict[str, dict[str, dict[int, dict]]], methods: list[str]) -> dict[str, Any]:
    """Areas, matched-MFLOPs accuracies, times and ratios per network from the runs' fronts."""
    from pareco.pareto import area_under_front

    out: dict[str, Any] = {}
    for network, by_method in runs.items():
        done = {m: s for m, s in by_method.items() if s}
        if not done:
            continue
        slimmable = [r for m in SLIMMABLE for r in done.get(m, {}).values()]
        ref = slimmable or [r for s in done.values() for r in s.values()]
        # budgets at which every method (and seed) has a model: from the largest of the fronts'
        # smallest MFLOPs to the largest MFLOPs of any front (a staircase stays flat after its
        # last point: a front whose best model is cheap offers that accuracy at larger budgets)
        lo = max(min(p["mflops"] for p in r["front"]) for r in ref)
        hi = max(max(p["mflops"] for p in r["front"]) for r in ref)
        arch = ref[0]["arch"]
        budgets = budgets_of(arch)
        net_doc: dict[str, Any] = {"arch": arch, "mflops_range": [lo, hi], "budgets": budgets,
                                   "methods": {}}
        bvals = np.array(list(budgets.values()))
        for method in methods:
            seeds = done.get(method, {})
            if not seeds:
                continue
            areas, at_budget, times = {}, {}, {}
            for seed, r in seeds.items():
                m = [p["mflops"] for p in r["front"]]
                a = [p["test_acc"] for p in r["front"]]
                areas[seed] = area_under_front(m, a, lo, hi) if hi > lo else float("nan")
                at_budget[seed] = staircase(r["front"], bvals).tolist()
                times[seed] = r["times"]
            devices = {s: seeds[s].get("device") or "unknown" for s in seeds}
            mdoc = {
                "seeds": sorted(seeds),
                "devices": devices,
                "area": {**spread(list(areas.values())), "per_seed": areas},
                "matched": {name: {**spread([at_budget[s][i] for s in seeds]),
                                   "per_seed": {s: at_budget[s][i] for s in seeds}}
                            for i, name in enumerate(budgets)},
                "times": {k: {**spread([times[s][k] for s in seeds]),
                              "per_seed": {s: times[s][k] for s in seeds}}
                          for k in TIME_KEYS},
                "times_by_device": {k: _by_device({s: times[s][k] for s in seeds}, devices)
                                    for k in TIME_KEYS},
                "fronts": {s: seeds[s]["front"] for s in seeds},
            }
            searches = {s: seeds[s]["search"] for s in seeds if "search" in seeds[s]}
            if searches:
                mdoc["search"] = searches
            net_doc["methods"][method] = mdoc
        net_doc["vs_slim"] = _vs_slim(net_doc["methods"], list(budgets))
        out[network] = net_doc
    return out


def _by_device(per_seed: dict, devices: dict) -> dict[str, dict[str, Any]]:
    """:func:`spread` of ``per_seed`` values per device (seconds on a GPU and on a CPU do not mix)."""
    groups: dict[str, list[float]] = {}
    for seed, value in per_seed.items():
        groups.setdefault(devices[seed], []).append(value)
    return {device: spread(values) for device, values in sorted(groups.items())}


def _paired(a: dict, b: dict, fn, seeds: set | None = None) -> dict[str, Any]:
    common = set(a) & set(b)
    if seeds is not None:
        common &= seeds
    values = {s: fn(a[s], b[s]) for s in sorted(common)}
    return {**spread(list(values.values())), "per_seed": values}


def _vs_slim(mdocs: dict[str, Any], budgets: list[str]) -> dict[str, Any]:
    """Paired (same seed) differences vs Slim: areas, matched accuracies, time ratios."""
    slim = mdocs.get("slim")
    if slim is None:
        return {}
    res: dict[str, Any] = {}
    for method, d in mdocs.items():
        if method == "slim":
            continue
        entry: dict[str, Any] = {
            "area_delta": _paired(d["area"]["per_seed"], slim["area"]["per_seed"],
                                  lambda x, y: x - y),
            "matched_delta": {b: _paired(d["matched"][b]["per_seed"],
                                         slim["matched"][b]["per_seed"], lambda x, y: x - y)
                              for b in budgets},
        }
        if method in SLIMMABLE:
            # time ratios pair only seeds that ran on the same kind of device as Slim's
            same = {s for s, dev in d["devices"].items() if slim["devices"].get(s) == dev}
            entry["time_ratio_seeds"] = sorted(same)
            for k in ("training_s", "wall_s"):
                mine, ref = d["times"][k]["per_seed"], slim["times"][k]["per_seed"]
                entry[f"time_ratio_{k}"] = _paired(mine, ref,
                                                   lambda x, y: x / y if y > 0 else float("nan"),
                                                   same)
                ms = spread([mine[s] for s in same])["mean"]
                ss = spread([ref[s] for s in same])["mean"]
                entry[f"time_ratio_{k}_of_means"] = ms / ss if ms is not None and ss else None
        res[method] = entry
    return res
