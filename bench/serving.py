"""Serving benchmark: bare ONNX Runtime vs the server's runner vs HTTP, throughput, switching.

(The servers, clients and the overload cell are in :mod:`bench.serving_http`, the SLO scenarios
in :mod:`bench.serving_slo`; this module runs the sections and reports.)

    python bench/serving.py --weights zoo/resnet20-fashionmnist/model.safetensors
    python bench/serving.py --weights /tmp/model.safetensors --quick --out /tmp/serving.json

For one weight file, every front configuration, all measured side by side in ONE run:

(a) ``bare``: an ONNX Runtime ``InferenceSession`` on the server's verified export (``serve.runners.export_verified``)
    with exactly the session options of the server's runner (threads, spinning, optimization);
(b) ``runner``: the in-process runner the server uses (``serve.runners.OrtRunner``), its
    ``predict`` on the same inputs; plus ``preprocess`` (the server's PNG decoding);
(c) ``http``: end to end through real ``python -m serve`` processes on 127.0.0.1 (a real PNG upload
    via httpx), at batch 1 and batch 32 (32 files in one request), against each server variant:
    ``default`` (micro-batching as shipped: --max-batch 32 --batch-delay-ms 2), ``delay0`` (batch only
    what queued meanwhile) and ``nobatch`` (--max-batch 1: one inference call per request);
(d) throughput (images/s) under 1, 8 and 32 concurrent keep-alive clients per server variant;
(e) the cost of switching configuration between consecutive requests (alternating two configs
    vs repeating one), over HTTP and in process;
(f) the speed-up from the largest to the smallest configuration next to their MFLOPs ratio.

Latency cells (a)-(c) are interleaved in a fresh random order every iteration, throughput cells
and switching patterns in a fresh random order every round, so every ratio compares numbers taken
side by side under the same machine load. Everything is bounded in count and in time. Prints
tables and PASS/MISS per target; writes raw JSON (``--out``, default
``bench/results/serving-<host>-<date>.json``) with the environment and the exact command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.common import default_result_path, environment, format_table, summarize
from bench.serving_http import (
    ServerProcess, load_cell, multipart, overload_cell, raw_request, sample_pngs, wait_ready
)
from bench.serving_slo import SLO_CLIENTS, SLO_FACTOR, slo_report, slo_section

DEFAULT_WEIGHTS = "zoo/resnet20-fashionmnist/model.safetensors"
BATCHES = (1, 32)
CONCURRENCY = (1, 8, 32)

TARGET_RUNNER_RATIO = 1.2  # runner p50 <= 1.2 x bare ORT p50
TARGET_HTTP_ADD_MS = 2.0  # HTTP p50 - runner p50 at batch 1
TARGET_BATCHING_GAIN = 2.0  # throughput with micro-batching / without, 32 clients


@dataclass(frozen=True)
class Plan:
    """How much to measure; every loop is bounded by these counts and time budgets."""

    warmup: int  # untimed iterations of every latency cell
    iters: int  # timed iterations of every latency cell
    latency_budget_s: float  # stop timing iterations after this (at least 3 iterations)
    rounds: int  # throughput rounds (every cell once per round)
    window_s: float  # one throughput cell
    throughput_budget_s: float  # no new round after this
    throughput_configs: tuple[str, ...]  # "largest" and/or "smallest"
    switch_rounds: int
    switch_block: int  # requests per config per pattern block
    switch_budget_s: float
    variants: tuple[str, ...]
    startup_timeout_s: float


DEFAULT_PLAN = Plan(warmup=5, iters=60, latency_budget_s=75.0, rounds=3, window_s=1.5,
                    throughput_budget_s=100.0,
                    throughput_configs=("largest", "smallest"), switch_rounds=5, switch_block=10,
                    switch_budget_s=30.0, variants=("default", "delay0", "nobatch"),
                    startup_timeout_s=240.0)
QUICK_PLAN = Plan(warmup=1, iters=5, latency_budget_s=8.0, rounds=1, window_s=0.3,
                  throughput_budget_s=10.0,
                  throughput_configs=("largest",), switch_rounds=1, switch_block=3,
                  switch_budget_s=5.0, variants=("default", "nobatch"), startup_timeout_s=90.0)
VARIANTS = ("default", "delay0", "nobatch")


def variant_flags(name: str, max_batch: int, delay_ms: float) -> list[str]:
    """``python -m serve`` options of a server variant. ``--max-inflight`` is raised above the
    most concurrent clients: these cells measure batching, not shedding (see overload_section)."""
    admit = ["--max-inflight", str(2 * max(CONCURRENCY))]
    return {"default": ["--max-batch", str(max_batch), "--batch-delay-ms", f"{delay_ms:g}", *admit],
            "delay0": ["--max-batch", str(max_batch), "--batch-delay-ms", "0", *admit],
            "nobatch": ["--max-batch", "1", "--batch-delay-ms", "0", *admit]}[name]


# --------------------------------------------------------------------------- latency (a)-(c)
@dataclass(frozen=True)
class Cell:
    kind: str  # bare | runner | preprocess | http
    config: str | None
    batch: int
    variant: str | None = None


def latency_section(plan: Plan, front, bare, runners, xs, pngs, bodies, servers, clients, rng,
                    log) -> dict[str, Any]:
    """Interleaved latency of every (kind, config, batch, variant) cell; p50/p90 in ms."""
    from serve.images import preprocess

    pre = xs["pre"]

    def run(cell: Cell) -> float:
        b = cell.batch
        if cell.kind == "bare":
            sess, name = bare[cell.config]
            t0 = time.perf_counter()
            sess.run(None, {name: xs[b]})
            return (time.perf_counter() - t0) * 1e3
        if cell.kind == "runner":
            r = runners[cell.config]
            t0 = time.perf_counter()
            r.predict(xs[b])
            return (time.perf_counter() - t0) * 1e3
        if cell.kind == "preprocess":  # what the server does per request before inference
            t0 = time.perf_counter()
            np.stack([preprocess(p, pre) for p in pngs[:b]])
            return (time.perf_counter() - t0) * 1e3
        body, ctype = bodies[b]
        url = f"{servers[cell.variant].base}/predict?mflops={mflops_of[cell.config]!r}"
        t0 = time.perf_counter()
        r = clients[cell.variant].post(url, content=body, headers={"content-type": ctype})
        ms = (time.perf_counter() - t0) * 1e3
        if r.status_code != 200:
            errors.append(f"{cell}: HTTP {r.status_code} {r.text[:200]}")
            return float("nan")
        return ms

    mflops_of = {c.id: c.mflops for c in front}
    errors: list[str] = []
    cells = [Cell("preprocess", None, b) for b in BATCHES]
    for c in front:
        for b in BATCHES:
            cells += [Cell("bare", c.id, b), Cell("runner", c.id, b)]
            cells += [Cell("http", c.id, b, v) for v in servers]
    samples: dict[Cell, list[float]] = {cell: [] for cell in cells}
    for _ in range(plan.warmup):
        for i in rng.permutation(len(cells)):
            run(cells[i])
    start = time.perf_counter()
    done = 0
    for it in range(plan.iters):
        if it >= 3 and time.perf_counter() - start > plan.latency_budget_s:
            log(f"  latency: time budget {plan.latency_budget_s:g} s reached after {it} iterations")
            break
        for i in rng.permutation(len(cells)):
            ms = run(cells[i])
            if ms == ms:  # not NaN
                samples[cells[i]].append(ms)
        done = it + 1
    out: dict[str, Any] = {"iterations": done, "warmup": plan.warmup,
                           "seconds": time.perf_counter() - start, "errors": errors[:20],
                           "error_count": len(errors),
                           "preprocess": {str(b): summarize(samples[Cell("preprocess", None, b)])
                                          for b in BATCHES},
                           "configs": {}}
    for c in front:
        d: dict[str, Any] = {"mflops": c.mflops}
        for kind in ("bare", "runner"):
            d[kind] = {str(b): summarize(samples[Cell(kind, c.id, b)]) for b in BATCHES}
        d["http"] = {v: {str(b): summarize(samples[Cell("http", c.id, b, v)]) for b in BATCHES}
                     for v in servers}
        out["configs"][c.id] = d
    return out


# ------------------------------------------------------------------------- throughput (d)
def throughput_section(plan: Plan, front, pngs, servers, rng, log) -> dict[str, Any]:
    picks = {"largest": front[-1], "smallest": front[0]}
    configs = [picks[p] for p in plan.throughput_configs]
    bodies = [multipart([p]) for p in pngs]
    cells = [(v, c.id, n) for v in servers for c in configs for n in CONCURRENCY]
    mflops_of = {c.id: c.mflops for c in front}
    reqs = {(v, cid): [raw_request(servers[v].port, mflops_of[cid], b, t) for b, t in bodies]
            for v in servers for cid in mflops_of}
    runs: dict[tuple, list[dict]] = {cell: [] for cell in cells}

    async def go() -> None:
        for r in range(plan.rounds):
            for i in rng.permutation(len(cells)):
                v, cid, n = cells[i]
                runs[cells[i]].append(await load_cell(servers[v], cid, reqs[(v, cid)], n,
                                                      plan.window_s))
            log(f"  throughput: round {r + 1}/{plan.rounds} done")
            if time.perf_counter() - start > plan.throughput_budget_s:
                log(f"  throughput: time budget {plan.throughput_budget_s:g} s reached")
                break

    start = time.perf_counter()
    asyncio.run(go())
    out_cells = []
    for (v, cid, n), rs in runs.items():
        images = sum(r["images"] for r in rs)
        seconds = sum(r["seconds"] for r in rs)
        sm = {k: sum(r["server_metrics"][k] for r in rs) for k in rs[0]["server_metrics"]}
        statuses: dict[str, int] = {}
        for r in rs:
            for k, cnt in r["statuses"].items():
                statuses[k] = statuses.get(k, 0) + cnt
        out_cells.append({
            "variant": v, "config": cid, "mflops": mflops_of[cid], "clients": n,
            "images": images, "seconds": seconds, "images_per_s": images / seconds,
            "per_round_images_per_s": [r["images_per_s"] for r in rs],
            "statuses": statuses,
            "latency_ms": summarize([x for r in rs for x in r["latency_ms"]]),
            "server_cpu_ms_per_image": 1e3 * sum(r["server_cpu_s"] for r in rs) / max(images, 1),
            "client_cpu_ms_per_image": 1e3 * sum(r["client_cpu_s"] for r in rs) / max(images, 1),
            # from the server's own metrics over the same windows (+ each cell's warm-up requests)
            "mean_batch_size": sm["batched_images"] / max(sm["batches"], 1),
            "inference_ms_per_image": 1e3 * sm["inference_s"] / max(sm["batched_images"], 1),
            "handler_ms_mean": 1e3 * sm["handler_s"] / max(sm["handled"], 1),
            "server_metrics": sm,
        })
    return {"window_s": plan.window_s, "rounds": plan.rounds, "batch_per_request": 1,
            "client": "raw asyncio HTTP/1.1 keep-alive (one connection per client)",
            "configs": [c.id for c in configs], "seconds": time.perf_counter() - start,
            "cells": out_cells}


def throughput_of(thr: dict[str, Any], variant: str, config: str, clients: int) -> float | None:
    for c in thr["cells"]:
        if (c["variant"], c["config"], c["clients"]) == (variant, config, clients):
            return c["images_per_s"]
    return None


# --------------------------------------------------------------------------- switching (e)
def switching_section(plan: Plan, front, runners, xs, bodies, servers, clients, rng,
                      log) -> dict[str, Any]:
    """p50 of batch-1 requests for A and B when the previous request used the same config
    (blocks repeating one config) vs the other config (alternating A, B); first request of every
    block dropped. Over HTTP per server variant and in process (runner.predict)."""
    a, b = front[-1], front[0]
    body, ctype = bodies[1]
    targets = ["runner", *servers]

    def call(target: str, cid: str) -> float:
        if target == "runner":
            t0 = time.perf_counter()
            runners[cid].predict(xs[1])
            return (time.perf_counter() - t0) * 1e3
        url = f"{servers[target].base}/predict?mflops={mflops[cid]!r}"
        t0 = time.perf_counter()
        r = clients[target].post(url, content=body, headers={"content-type": ctype})
        ms = (time.perf_counter() - t0) * 1e3
        return ms if r.status_code == 200 else float("nan")

    mflops = {c.id: c.mflops for c in front}
    k = plan.switch_block
    patterns = {"repeat_a": [a.id] * k, "repeat_b": [b.id] * k, "alternate": [a.id, b.id] * k}
    samples = {(t, p, cid): [] for t in targets for p in patterns for cid in (a.id, b.id)}
    start = time.perf_counter()
    rounds = 0
    for r in range(plan.switch_rounds):
        if r >= 1 and time.perf_counter() - start > plan.switch_budget_s:
            log(f"  switching: time budget {plan.switch_budget_s:g} s reached after {r} rounds")
            break
        blocks = [(t, p) for t in targets for p in patterns]
        for i in rng.permutation(len(blocks)):
            t, p = blocks[i]
            for j, cid in enumerate(patterns[p]):
                ms = call(t, cid)
                if j > 0 and ms == ms:
                    samples[(t, p, cid)].append(ms)
        rounds = r + 1
    out: dict[str, Any] = {"a": a.id, "b": b.id, "block": k, "rounds": rounds,
                           "seconds": time.perf_counter() - start, "targets": {}}
    for t in targets:
        d: dict[str, Any] = {}
        for cid, rep in ((a.id, "repeat_a"), (b.id, "repeat_b")):
            same = summarize(samples[(t, rep, cid)])
            alt = summarize(samples[(t, "alternate", cid)])
            d[cid] = {"repeat": same, "alternate": alt,
                      "switch_cost_ms": alt["p50"] - same["p50"],
                      "ratio": alt["p50"] / same["p50"]}
        d["mean_switch_cost_ms"] = float(np.mean([d[c]["switch_cost_ms"] for c in (a.id, b.id)]))
        out["targets"][t] = d
    return out


# ---------------------------------------------------------------------------- speed-up (f)
def speedup_section(front, lat: dict[str, Any], thr: dict[str, Any] | None) -> dict[str, Any]:
    big, small = front[-1], front[0]
    L, S = lat["configs"][big.id], lat["configs"][small.id]
    out: dict[str, Any] = {"largest": big.id, "smallest": small.id,
                           "mflops_ratio": big.mflops / small.mflops, "latency_p50_ratio": {}}
    for b in map(str, BATCHES):
        out["latency_p50_ratio"][f"bare_b{b}"] = L["bare"][b]["p50"] / S["bare"][b]["p50"]
        out["latency_p50_ratio"][f"runner_b{b}"] = L["runner"][b]["p50"] / S["runner"][b]["p50"]
        for v in L["http"]:
            out["latency_p50_ratio"][f"http_{v}_b{b}"] = (L["http"][v][b]["p50"]
                                                          / S["http"][v][b]["p50"])
    if thr is not None and {big.id, small.id} <= set(thr["configs"]):
        out["throughput_ratio"] = {}
        for v in {c["variant"] for c in thr["cells"]}:
            for n in CONCURRENCY:
                hi, lo = throughput_of(thr, v, small.id, n), throughput_of(thr, v, big.id, n)
                if hi and lo:
                    out["throughput_ratio"][f"{v}_{n}clients"] = hi / lo
    return out


# ------------------------------------------------------------------------ overload (g), start (h)
def overload_section(server: ServerProcess, png: bytes, clients_list: tuple[int, ...],
                     window_s: float, log) -> dict[str, Any]:
    """Idle p50 (one client, sequential), then one overload cell per client count."""
    request = raw_request(server.port, 1e9, png, "image/png")  # the largest config: the heaviest

    async def go() -> dict[str, Any]:
        idle = await overload_cell(server.port, request, 1, min(window_s, 3.0), 300, 1.0)
        cells = []
        for n in clients_list:
            cells.append(await overload_cell(server.port, request, n, window_s))
            c = cells[-1]
            log(f"  overload {n} clients: {c['accepted_per_s']:.0f} accepted/s, p50 "
                f"{c['accepted_p50_ms']:.1f} ms, p99 {c['accepted_p99_ms']:.1f} ms, 503 share "
                f"{c['share_503']:.2f}, /healthz worst {c['healthz_worst_s']:.3f} s, "
                f"load {os.getloadavg()[0]:.2f}")
        return {"idle_p50_ms": idle["accepted_p50_ms"], "idle": idle, "cells": cells,
                "load_average_after": os.getloadavg()}

    return asyncio.run(go())


def startup_section(weights: Path, threads: int, logdir: Path, runs: int, log) -> dict[str, Any]:
    """Seconds from process start to ``/readyz`` 200 of ``python -m serve``, ``runs`` times in a
    row (the first may build the ONNX cache; the later ones start from it)."""
    times = []
    for i in range(runs):
        s = ServerProcess(f"startup{i}", weights, [], threads, logdir)
        s.start()
        try:
            wait_ready([s], 300)
        finally:
            s.stop()
        times.append(s.ready_s)
        log(f"  start-up {i}: ready in {s.ready_s:.2f} s (load {os.getloadavg()[0]:.2f})")
    return {"ready_s": times, "load_average_after": os.getloadavg()}


def run_only(args: argparse.Namespace, log) -> dict[str, Any]:
    """``--only overload,startup,slo``: just those scenarios against fresh servers."""
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    if not wanted or wanted - {"overload", "startup", "slo"}:
        raise SystemExit(f"serving.py: error: --only takes overload, startup and/or slo, got "
                         f"{args.only!r}")
    weights = Path(args.weights).resolve()
    logdir = Path(tempfile.mkdtemp(prefix="pareco-bench-serving-"))
    out: dict[str, Any] = {"benchmark": "serving-overload", "schema": 1,
                           "environment": environment(threads={"server_intra_op_threads": args.threads})}
    if "startup" in wanted:
        out["startup"] = startup_section(weights, args.threads, logdir, 3, log)
    if "overload" in wanted:
        s = ServerProcess("overload", weights, [], args.threads, logdir)
        s.start()
        try:
            wait_ready([s], 300)
            png = sample_pngs(1, 28, 1)[0][0]
            out["overload"] = overload_section(s, png, (128, 256), args.window_s or 10.0, log)
        finally:
            s.stop()
    if "slo" in wanted:
        out["slo"] = slo_section(weights, args, logdir, log)
    return out


# ------------------------------------------------------------------------------- targets
def targets_section(front, lat, thr) -> list[dict[str, Any]]:
    out = []
    ratios = {f"{cid} b{b}": d["runner"][b]["p50"] / d["bare"][b]["p50"]
              for cid, d in lat["configs"].items() for b in map(str, BATCHES)}
    worst = max(ratios, key=ratios.get)
    out.append({"name": "runner_vs_bare_ort", "target": f"runner p50 <= {TARGET_RUNNER_RATIO} x bare ORT p50",
                "measured": ratios[worst], "worst_cell": worst, "per_cell": ratios,
                "pass": ratios[worst] <= TARGET_RUNNER_RATIO})
    for v in lat["configs"][front[0].id]["http"]:
        adds = {cid: d["http"][v]["1"]["p50"] - d["runner"]["1"]["p50"]
                for cid, d in lat["configs"].items()}
        worst = max(adds, key=adds.get)
        out.append({"name": f"http_adds_b1[{v}]",
                    "target": f"HTTP p50 - runner p50 <= {TARGET_HTTP_ADD_MS} ms at batch 1",
                    "measured": adds[worst], "worst_cell": worst, "per_config_ms": adds,
                    "pass": adds[worst] <= TARGET_HTTP_ADD_MS,
                    "primary": v == "default"})
    if thr is not None:
        for cid in thr["configs"]:
            for v in ("default", "delay0"):
                on, off = throughput_of(thr, v, cid, 32), throughput_of(thr, "nobatch", cid, 32)
                if on and off:
                    out.append({"name": f"microbatching_gain_32clients[{v} vs nobatch, {cid}]",
                                "target": f"images/s with micro-batching >= {TARGET_BATCHING_GAIN} x "
                                          f"per-request inference, 32 clients",
                                "measured": on / off, "with_batching": on, "without": off,
                                "pass": on / off >= TARGET_BATCHING_GAIN,
                                "primary": v == "default" and cid == thr["configs"][0]})
    return out


# -------------------------------------------------------------------------------- report
def report(res: dict[str, Any]) -> str:
    lat, lines = res["latency"], []
    variants = list(res["servers"])
    for b in map(str, BATCHES):
        headers = ["config", "MFLOPs", "bare p50", "p90", "runner p50", "p90", "runner/bare"]
        for v in variants:
            headers += [f"http[{v}] p50", "p90"]
        headers += [f"+http[{variants[0]}]"]
        rows = []
        for cid, d in lat["configs"].items():
            row = [cid, d["mflops"], d["bare"][b]["p50"], d["bare"][b]["p90"],
                   d["runner"][b]["p50"], d["runner"][b]["p90"],
                   d["runner"][b]["p50"] / d["bare"][b]["p50"]]
            for v in variants:
                row += [d["http"][v][b]["p50"], d["http"][v][b]["p90"]]
            row.append(d["http"][variants[0]][b]["p50"] - d["runner"][b]["p50"])
            rows.append(row)
        pre = lat["preprocess"][b]
        lines.append(format_table(headers, rows, title=(
            f"\nLatency, batch {b} (ms; {lat['iterations']} interleaved iterations; "
            f"server PNG decode of {b} image(s): p50 {pre['p50']:.3f} ms)")))
    if res.get("throughput"):
        thr = res["throughput"]
        rows = []
        for c in sorted(thr["cells"], key=lambda c: (c["config"], c["clients"], c["variant"])):
            rows.append([c["config"], c["clients"], c["variant"], c["images_per_s"],
                         c["latency_ms"].get("p50"), c["latency_ms"].get("p90"),
                         c["mean_batch_size"], c["inference_ms_per_image"],
                         c["server_cpu_ms_per_image"], c["client_cpu_ms_per_image"],
                         sum(v for k, v in c["statuses"].items() if k != "200")])
        lines.append(format_table(
            ["config", "clients", "server", "images/s", "lat p50", "p90", "batch", "infer ms/img",
             "srv cpu ms/img", "cli cpu ms/img", "non-200"], rows,
            title=f"\nThroughput, batch-1 requests ({thr['rounds']} round(s) x {thr['window_s']:g} s "
                  f"per cell, interleaved)"))
    if res.get("switching"):
        sw = res["switching"]
        rows = []
        for t, d in sw["targets"].items():
            for cid in (sw["a"], sw["b"]):
                rows.append([t, cid, d[cid]["repeat"]["p50"], d[cid]["alternate"]["p50"],
                             d[cid]["switch_cost_ms"], d[cid]["ratio"]])
        lines.append(format_table(["path", "config", "repeat p50", "alternate p50", "cost ms",
                                   "ratio"], rows,
                                  title=f"\nConfig switching, batch 1 ({sw['rounds']} rounds)"))
    sp = res["speedup"]
    rows = [[k, v] for k, v in sp["latency_p50_ratio"].items()]
    rows += [[f"throughput {k}", v] for k, v in sp.get("throughput_ratio", {}).items()]
    lines.append(format_table(["measure", "largest/smallest"], rows, title=(
        f"\nSpeed-up {sp['largest']} -> {sp['smallest']}: MFLOPs ratio {sp['mflops_ratio']:.2f}")))
    rows = [["PASS" if t["pass"] else "MISS", t["name"], t["measured"], t["target"]]
            for t in res["targets"]]
    lines.append(format_table(["", "target", "measured", "goal"], rows, title="\nTargets"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from serve.settings import default_threads

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help="the zoo weight file to serve")
    p.add_argument("--out", default=None,
                   help="JSON result path (default bench/results/serving-<host>-<date>.json)")
    p.add_argument("--quick", action="store_true", help="few iterations (a smoke test, ~30 s)")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="intra-op threads per inference call (the server's default)")
    p.add_argument("--max-batch", type=int, default=32, help="the default variant's --max-batch")
    p.add_argument("--batch-delay-ms", type=float, default=2.0,
                   help="the default variant's --batch-delay-ms")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated server variants among {','.join(VARIANTS)} "
                        f"(default: all; --quick: default,nobatch)")
    p.add_argument("--iters", type=int, default=None, help="timed latency iterations")
    p.add_argument("--rounds", type=int, default=None, help="throughput rounds")
    p.add_argument("--window-s", type=float, default=None, help="seconds per throughput cell")
    p.add_argument("--seed", type=int, default=0, help="order of the interleaved cells")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' log folder")
    p.add_argument("--only", default=None,
                   help="run only these scenarios: overload (128 and 256 clients: accepted/s, "
                        "p50/p99, 503 share, worst /healthz), startup (seconds to ready, 3 "
                        "starts in a row) and/or slo (fixed full width vs --slo-ms at 1, 32, 128, "
                        "256 clients), e.g. --only overload,startup")
    p.add_argument("--slo-ms", type=float, default=None,
                   help=f"the slo scenario's objective (default: {SLO_FACTOR:g} x the idle "
                        f"full-width p50 measured first)")
    p.add_argument("--slo-rate", type=float, default=None,
                   help="the slo scenario also offers this many requests/s from 128 and 256 "
                        "clients together (paced, not closed-loop)")
    p.add_argument("--slo-max-inflight", type=int, default=max(SLO_CLIENTS),
                   help="the SLO server's --max-inflight (the objective, not this, should shed)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.slo_ms is not None and not 0 < args.slo_ms < float("inf"):
        p.error(f"--slo-ms must be a finite number of milliseconds > 0, got {args.slo_ms:g}")
    if args.slo_rate is not None and not 0 < args.slo_rate < float("inf"):
        p.error(f"--slo-rate must be a finite number of requests/s > 0, got {args.slo_rate:g}")
    if args.slo_max_inflight < 1:
        p.error(f"--slo-max-inflight must be >= 1, got {args.slo_max_inflight}")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    changes: dict[str, Any] = {}
    if args.variants:
        names = tuple(v.strip() for v in args.variants.split(",") if v.strip())
        bad = [v for v in names if v not in VARIANTS]
        if bad or not names:
            raise SystemExit(f"serving.py: error: unknown variants {bad}; choose among {VARIANTS}")
        changes["variants"] = names
    for key in ("iters", "rounds", "window_s"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    return Plan(**(asdict(plan) | changes))


def _write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")


def main_only(args: argparse.Namespace, log) -> int:
    """``--only``: run those scenarios, write their JSON, print the SLO report if any."""
    result = run_only(args, log)
    result["load_average_after"] = os.getloadavg()
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out = Path(args.out) if args.out else default_result_path(
        "serving-slo" if "slo" in result else "serving-overload")
    _write(result, out)
    if "slo" in result:
        print(slo_report(result["slo"]))
    print(f"uptime: {result['uptime_after']}")
    print(f"raw results: {out}")
    return 0


def local_paths(zoo, front, threads: int, log) -> tuple[dict, dict, dict[str, Any]]:
    """The server's in-process runners and bare ORT sessions on the server's own verified
    graphs, with exactly the runner's session options: ``(runners, bare, session_options)``."""
    import onnxruntime as ort

    from serve import onnxcache
    from serve.runners import OrtRunner, export_verified

    t0 = time.perf_counter()
    pre = zoo.preprocessing
    probe = onnxcache.probe_input((pre.channels, pre.image_size, pre.image_size))
    onnx_bytes, _ = export_verified(zoo, probe, onnxcache.TOLERANCE)
    runners = {cid: OrtRunner(data, threads) for cid, data in onnx_bytes.items()}
    bare = {}
    for c in zoo.front:
        opts = runners[c.id].session.get_session_options()
        sess = ort.InferenceSession(onnx_bytes[c.id], opts, providers=["CPUExecutionProvider"])
        bare[c.id] = (sess, sess.get_inputs()[0].name)
    opts = runners[front[0].id].session.get_session_options()
    session_options = {
        "intra_op_num_threads": opts.intra_op_num_threads,
        "inter_op_num_threads": opts.inter_op_num_threads,
        "execution_mode": str(opts.execution_mode),
        "graph_optimization_level": str(opts.graph_optimization_level),
        "session.intra_op.allow_spinning": opts.get_session_config_entry(
            "session.intra_op.allow_spinning"),
        "providers": bare[front[0].id][0].get_providers()}
    log(f"in-process runners and bare sessions built in {time.perf_counter() - t0:.1f} s")
    return runners, bare, session_options


def check_servers(servers: dict[str, ServerProcess], clients: dict, front, body) -> dict[str, Any]:
    """Open a client per server, check every config is reachable by its own MFLOPs as the
    budget (RuntimeError otherwise), and return each server's flags, port and start-up times."""
    import httpx

    info = {}
    for v, s in servers.items():
        clients[v] = httpx.Client(timeout=60)
        cfg = clients[v].get(f"{s.base}/configs").json()
        for c in front:
            r = clients[v].post(f"{s.base}/predict?mflops={c.mflops!r}", content=body[0],
                                headers={"content-type": body[1]})
            if r.status_code != 200 or r.json()["config"]["id"] != c.id:
                raise RuntimeError(f"server {v}: mflops={c.mflops!r} did not select {c.id}: "
                                   f"{r.status_code} {r.text[:300]}")
        info[v] = {"flags": s.flags, "argv": s.argv, "port": s.port, "ready_s": s.ready_s,
                   "startup_latency_ms": {c["id"]: c["latency_ms"] for c in cfg["configs"]}}
    return info


def measure(args: argparse.Namespace, plan: Plan, zoo, weights: Path,
            servers: dict[str, ServerProcess], clients: dict, log) -> dict[str, Any]:
    """Every section against started ``servers``; the result without its timing summary."""
    from serve.images import preprocess

    front = sorted(zoo.front, key=lambda c: (c.macs, c.id))
    pre = zoo.preprocessing
    runners, bare, session_options = local_paths(zoo, front, args.threads, log)
    pngs, image_source = sample_pngs(max(BATCHES), pre.image_size, pre.channels)
    x32 = np.stack([preprocess(p, pre) for p in pngs])
    xs: dict[Any, Any] = {1: np.ascontiguousarray(x32[:1]), 32: x32, "pre": pre}
    bodies = {b: multipart(pngs[:b]) for b in BATCHES}
    parity = {c.id: float(np.abs(runners[c.id].predict(x32)
                                 - bare[c.id][0].run(None, {bare[c.id][1]: x32})[0]).max())
              for c in front}  # the in-process paths compute the same logits

    wait_ready(list(servers.values()), plan.startup_timeout_s)
    log("servers ready: " + ", ".join(f"{n} in {s.ready_s:.1f} s" for n, s in servers.items()))
    server_info = check_servers(servers, clients, front, bodies[1])
    env_before = environment(threads={"server_intra_op_threads": args.threads,
                                      "ort_session": session_options})
    rng = np.random.default_rng(args.seed)
    log(f"latency: up to {plan.iters} iterations of {len(front) * len(BATCHES) * (2 + len(servers)) + 2}"
        f" interleaved cells")
    lat = latency_section(plan, front, bare, runners, xs, pngs, bodies, servers, clients, rng, log)
    log(f"latency: {lat['iterations']} iterations in {lat['seconds']:.1f} s")
    log(f"throughput: {len(plan.variants) * len(plan.throughput_configs) * len(CONCURRENCY)} cells"
        f" x {plan.rounds} round(s) x {plan.window_s:g} s")
    thr = throughput_section(plan, front, pngs, servers, rng, log)
    log("switching")
    sw = switching_section(plan, front, runners, xs, bodies, servers, clients, rng, log)
    return {
        "benchmark": "serving", "schema": 1,
        "environment": env_before,
        "load_average_after": os.getloadavg(),
        "plan": asdict(plan) | {"quick": args.quick, "seed": args.seed},
        "weights": {"path": str(weights), "arch": zoo.meta["arch"],
                    "input_shape": list(xs[1].shape[1:]),
                    "front": [{"id": c.id, "mflops": c.mflops, "params": c.params,
                               "alpha": list(c.alpha), "val_acc": c.val_acc,
                               "test_acc": c.test_acc} for c in front]},
        "images": {"source": image_source, "format": "PNG",
                   "bytes_per_request": {str(b): len(bodies[b][0]) for b in BATCHES}},
        "session_options": session_options,
        "parity_max_abs_diff_runner_vs_bare": parity,
        "servers": server_info,
        "latency": lat, "throughput": thr, "switching": sw,
        "speedup": speedup_section(front, lat, thr),
        "targets": targets_section(front, lat, thr),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop the servers
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True)

    if args.only:
        return main_only(args, log)

    from pareco.weightfile import load_zoo_model

    weights = Path(args.weights).resolve()
    zoo = load_zoo_model(weights)
    pre = zoo.preprocessing
    log(f"{weights}: {zoo.meta['arch']['name']}, {len(zoo.front)} configs "
        f"{min(c.mflops for c in zoo.front):.3f}..{max(c.mflops for c in zoo.front):.3f} MFLOPs, "
        f"input {(pre.channels, pre.image_size, pre.image_size)}, threads {args.threads}")
    logdir = Path(tempfile.mkdtemp(prefix="pareco-bench-serving-"))
    servers = {v: ServerProcess(v, weights, variant_flags(v, args.max_batch, args.batch_delay_ms),
                                args.threads, logdir) for v in plan.variants}
    clients: dict[str, Any] = {}
    done = False
    try:
        for s in servers.values():  # start first: they load while this process builds its sessions
            s.start()
        log(f"started servers {', '.join(f'{n} (port {s.port})' for n, s in servers.items())}; "
            f"logs in {logdir}")
        result = measure(args, plan, zoo, weights, servers, clients, log)
        result["duration_s"] = time.perf_counter() - t_start
        done = True
    finally:
        for c in clients.values():
            c.close()
        for s in servers.values():
            s.stop()
        if not args.keep_logs and done:
            for f in logdir.iterdir():
                f.unlink()
            logdir.rmdir()
    out = Path(args.out) if args.out else default_result_path("serving")
    _write(result, out)
    print(report(result))
    print(f"\nraw results: {out}  ({result['duration_s']:.0f} s)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
