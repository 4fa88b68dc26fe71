"""The serving benchmark's SLO scenarios (:mod:`bench.serving` ``--only slo``, issue 14): fixed
full width vs ``--slo-ms P`` at 1, 32, 128 and 256 clients (and paced cells), ratios and targets.

A third mode, ``smallest``, sends the same requests to the fixed server with a budget only the
cheapest configuration fits: its throughput over fixed full width is the *width ceiling*, the most
any width-switching policy can gain on this host (the rest of a request's cost, HTTP, decoding,
the event loop, does not depend on the width).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import format_table
from bench.serving_http import ServerProcess, overload_cell, raw_request, sample_pngs, wait_ready

SLO_CLIENTS = (1, 32, 128, 256)
SLO_FACTOR = 4.0  # the default objective: this many x the idle full-width p50 of the same run
TARGET_SLO_THROUGHPUT = 2.0  # SLO mode accepted/s >= 2 x fixed full width, at no worse p99
MODES = ("fixed", "smallest", "slo")


def scrape_serving(server: ServerProcess) -> dict[str, float]:
    """Counters of what was served: ``accuracy_sum``/``accuracy_count`` (expected accuracy of the
    config that answered each request), ``chosen:<config>``, ``rejected:<reason>`` and, in SLO
    mode, ``answered``/``within_slo``: /predict 200s, and those the server timed within P (its
    request-duration histogram has a bucket at P, :func:`serve.metrics.latency_buckets`)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {"accuracy_sum": 0.0, "accuracy_count": 0.0}
    text = httpx.get(f"{server.base}/metrics", timeout=30).text
    families = list(text_string_to_metric_families(text))
    slo_s = next((smp.value for fam in families for smp in fam.samples
                  if smp.name == "pareco_slo_objective_seconds"), None)
    for fam in families:
        for smp in fam.samples:
            if smp.name == "pareco_served_expected_accuracy_sum":
                out["accuracy_sum"] = smp.value
            elif smp.name == "pareco_served_expected_accuracy_count":
                out["accuracy_count"] = smp.value
            elif smp.name == "pareco_chosen_config_total":
                out[f"chosen:{smp.labels['config']}"] = smp.value
            elif smp.name == "pareco_overload_rejections_total":
                out[f"rejected:{smp.labels['reason']}"] = smp.value
            elif (slo_s is not None and smp.labels.get("endpoint") == "/predict"
                  and smp.labels.get("status") == "200"):
                if smp.name == "pareco_http_request_duration_seconds_count":
                    out["answered"] = smp.value
                elif (smp.name == "pareco_http_request_duration_seconds_bucket"
                      and math.isclose(float(smp.labels["le"]), slo_s, rel_tol=1e-9)):
                    out["within_slo"] = smp.value
    return out


def slo_cell(server: ServerProcess, request: bytes, clients: int, window_s: float,
             rate_per_s: float | None = None) -> dict[str, Any]:
    """One cell (:func:`overload_cell`: closed loop, or ``rate_per_s`` offered) plus the
    server's counters over it and the load average before and after."""
    m0, load0 = scrape_serving(server), os.getloadavg()
    cell = asyncio.run(overload_cell(server.port, request, clients, window_s, keep_samples=True,
                                     rate_per_s=rate_per_s))
    m1 = scrape_serving(server)
    delta = {k: m1[k] - m0.get(k, 0.0) for k in m1 if m1[k] - m0.get(k, 0.0)}
    return cell | {"server_counters": delta, "load_before": load0, "load_after": os.getloadavg()}


def merge_slo_cells(runs: list[dict[str, Any]], slo_ms: float) -> dict[str, Any]:
    """The rounds of one (mode, clients) cell as one: totals, percentiles of all samples, and
    the shares of accepted requests within ``slo_ms`` as the clients and (SLO mode) the server
    timed them; the difference is time spent outside the server's clock (accept queue, HTTP
    parsing before the app, the client's own event loop)."""
    seconds = sum(r["seconds"] for r in runs)
    lat = np.asarray([x for r in runs for x in r["accepted_ms"]] or [np.nan])
    statuses: dict[str, int] = {}
    counters: dict[str, float] = {}
    for r in runs:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in r["server_counters"].items():
            counters[k] = counters.get(k, 0.0) + v
    total = sum(statuses.values())
    served = counters.get("accuracy_count", 0.0)
    return {"seconds": seconds, "requests": total, "statuses": statuses,
            "accepted_per_s": statuses.get("200", 0) / seconds,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "share_503": statuses.get("503", 0) / total if total else None,
            "mean_expected_accuracy": (counters.get("accuracy_sum", 0.0) / served if served
                                       else None),
            "chosen": {k.split(":", 1)[1]: int(v) for k, v in counters.items()
                       if k.startswith("chosen:")},
            "rejected": {k.split(":", 1)[1]: int(v) for k, v in counters.items()
                         if k.startswith("rejected:")},
            "client_within_slo": float(np.mean(lat <= slo_ms)) if statuses.get("200") else None,
            "server_within_slo": (counters.get("within_slo", 0.0) / counters["answered"]
                                  if counters.get("answered") else None),
            "connection_errors": sum(r["connection_errors"] for r in runs),
            "load_average": [r["load_before"] for r in runs] + [runs[-1]["load_after"]]}


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is 0 or NaN (e.g. nothing accepted)."""
    return a / b if b == b and b != 0 else float("nan")


Scenario = tuple[str, int, float | None]  # (label, clients, offered requests/s or None)


def cheapest_config(server: ServerProcess) -> dict[str, Any]:
    """The served config with the fewest MFLOPs (``id``, ``mflops``, ``latency_ms``)."""
    import httpx

    configs = httpx.get(f"{server.base}/configs", timeout=30).json()["configs"]
    c = min(configs, key=lambda c: c["mflops"])
    return {"id": c["id"], "mflops": c["mflops"], "latency_ms": c["latency_ms"]}


def slo_targets(cells: dict[str, dict[str, dict[str, Any]]], ratios: dict[str, dict[str, float]],
                scenarios: list[Scenario], slo_ms: float) -> list[dict[str, Any]]:
    """Issue 14's targets in every scenario at 128 and 256 clients (``ratios``: SLO and cheapest
    config over fixed full width, by scenario)."""
    out = []
    for label, n, _rate in scenarios:
        if n not in (128, 256):
            continue
        s, f = cells["slo"][label], cells["fixed"][label]
        out.append({"name": f"slo_p99[{label}]", "target": f"p99 of accepted <= {slo_ms:g} ms",
                    "measured": s["p99_ms"], "pass": s["p99_ms"] <= slo_ms})
        out.append({"name": f"slo_503_share[{label}]",
                    "target": "0 % 503 while the smallest config keeps up",
                    "measured": s["share_503"], "pass": s["share_503"] == 0})
        gain, ceiling = ratios[label]["throughput"], ratios[label]["width_ceiling"]
        out.append({"name": f"slo_throughput_ratio[{label}]",
                    "target": f"accepted/s >= {TARGET_SLO_THROUGHPUT:g} x fixed full width at no "
                              f"worse p99", "measured": gain, "p99_ms": [s["p99_ms"], f["p99_ms"]],
                    "width_ceiling": ceiling, "reachable": ceiling >= TARGET_SLO_THROUGHPUT,
                    "pass": gain >= TARGET_SLO_THROUGHPUT and s["p99_ms"] <= f["p99_ms"]})
    return out


def slo_scenarios(rate_per_s: float | None) -> list[Scenario]:
    """``(label, clients, offered rate or None: closed loop)``: :data:`SLO_CLIENTS` closed-loop,
    plus 128 and 256 clients offering ``rate_per_s`` together when given."""
    out: list[Scenario] = [(str(n), n, None) for n in SLO_CLIENTS]
    if rate_per_s:
        out += [(f"{n}@{rate_per_s:g}/s", n, rate_per_s) for n in (128, 256)]
    return out


def start_slo_servers(weights: Path, args: argparse.Namespace, logdir: Path, png: bytes,
                      servers: dict[str, ServerProcess], log) -> tuple[float, float]:
    """Start ``fixed`` (the shipped defaults), time it idle, then ``slo``; both into ``servers``
    (stopped by the caller). Returns ``(idle full-width p50 ms, the objective P ms)``."""
    servers["fixed"] = fixed = ServerProcess("fixed", weights, [], args.threads, logdir)
    fixed.start()
    wait_ready([fixed], 300)
    idle = asyncio.run(overload_cell(fixed.port, raw_request(fixed.port, 1e9, png, "image/png"),
                                     1, 3.0, 500, 1.0))
    slo_ms = args.slo_ms or round(SLO_FACTOR * idle["accepted_p50_ms"], 1)
    log(f"  idle full width p50 {idle['accepted_p50_ms']:.2f} ms -> --slo-ms {slo_ms:g}")
    servers["slo"] = ServerProcess("slo", weights, ["--slo-ms", f"{slo_ms:g}", "--max-inflight",
                                                    str(args.slo_max_inflight)],
                                   args.threads, logdir)
    servers["slo"].start()
    wait_ready([servers["slo"]], 300)
    return idle["accepted_p50_ms"], slo_ms


def slo_section(weights: Path, args: argparse.Namespace, logdir: Path, log) -> dict[str, Any]:
    """Fixed full width (the shipped defaults), the same server at its cheapest config and
    ``--slo-ms P`` (``--max-inflight`` raised: the objective sheds) in every
    :func:`slo_scenarios` cell, interleaved in a fresh random order every round. ``P``:
    ``args.slo_ms``, else :data:`SLO_FACTOR` x the idle full-width p50 measured first on the
    fixed server. Requests carry ``mflops=1e9`` (every config fits), the cheapest mode's the
    cheapest config's MFLOPs."""
    png = sample_pngs(1, 28, 1)[0][0]
    servers: dict[str, ServerProcess] = {}
    scenarios = slo_scenarios(args.slo_rate)
    rounds, window_s = args.rounds or 2, args.window_s or 8.0
    keys = [(mode, sc) for mode in MODES for sc in scenarios]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(m, sc[0]): [] for m, sc in keys}
    try:
        idle_ms, slo_ms = start_slo_servers(weights, args, logdir, png, servers, log)
        request = {m: raw_request(s.port, 1e9, png, "image/png") for m, s in servers.items()}
        smallest = cheapest_config(servers["fixed"])
        request["smallest"] = raw_request(servers["fixed"].port, smallest["mflops"], png,
                                          "image/png")
        target = servers | {"smallest": servers["fixed"]}
        rng = np.random.default_rng(args.seed)
        for r in range(rounds):
            for i in rng.permutation(len(keys)):
                mode, (label, n, rate) = keys[i]
                c = slo_cell(target[mode], request[mode], n, window_s, rate)
                runs[(mode, label)].append(c)
                log(f"  round {r + 1} {mode:8s} {label:>12s}: {c['accepted_per_s']:.0f}/s, p99 "
                    f"{c['accepted_p99_ms']:.1f} ms, 503 {c['share_503']:.2f}, load "
                    f"{c['load_after'][0]:.2f}")
    finally:
        for s in servers.values():
            s.stop()
    labels = [sc[0] for sc in scenarios]
    cells = {m: {lb: merge_slo_cells(runs[(m, lb)], slo_ms) for lb in labels} for m in MODES}
    slo, fix = cells["slo"], cells["fixed"]
    ratios = {lb: {"throughput": ratio(slo[lb]["accepted_per_s"], fix[lb]["accepted_per_s"]),
                   "p99": ratio(slo[lb]["p99_ms"], fix[lb]["p99_ms"]),
                  "width_ceiling": ratio(cells["smallest"][lb]["accepted_per_s"],
                                         fix[lb]["accepted_per_s"])} for lb in labels}
    return {"slo_ms": slo_ms, "idle_full_width_p50_ms": idle_ms, "smallest": smallest,
            "servers": {m: s.flags for m, s in servers.items()}, "rounds": rounds,
            "window_s": window_s, "scenarios": [list(sc) for sc in scenarios], "cells": cells,
            "ratios_slo_vs_fixed": ratios,
            "targets": slo_targets(cells, ratios, scenarios, slo_ms)}


def slo_report(res: dict[str, Any]) -> str:
    """The side-by-side table of :func:`slo_section` and its targets."""
    rows = []
    for n, _clients, _rate in res["scenarios"]:
        for mode in MODES:
            c = res["cells"][mode][n]
            top = sorted(c["chosen"].items(), key=lambda kv: -kv[1])[:4]
            mix = ", ".join(f"{k} {v}" for k, v in top)
            within = "/".join("-" if v is None else f"{100 * v:.1f}"
                              for v in (c.get("client_within_slo"), c.get("server_within_slo")))
            rows.append([n, mode, c["accepted_per_s"], c["p50_ms"], c["p99_ms"], within,
                         100 * (c["share_503"] or 0), c["mean_expected_accuracy"], mix,
                         "/".join(f"{la[0]:.1f}" for la in c["load_average"])])
        r = res["ratios_slo_vs_fixed"][n]
        rows.append([n, "slo/fixed", r["throughput"], None, r["p99"], "", None, None, "", ""])
        rows.append([n, "smallest/fixed", r["width_ceiling"], None, None, "", None, None,
                     "the width ceiling", ""])
    lines = [format_table(
        ["scenario", "mode", "accepted/s", "p50 ms", "p99 ms", "<= P % client/server", "503 %",
         "mean exp. acc",
         "chosen (top 4)", "load 1-min"], rows,
        title=f"\nSLO mode --slo-ms {res['slo_ms']:g} (idle full-width p50 "
              f"{res['idle_full_width_p50_ms']:.2f} ms) vs fixed full width; {res['rounds']} "
              f"round(s) x {res['window_s']:g} s per cell, interleaved")]
    rows = [["PASS" if t["pass"] else "MISS", t["name"], t["measured"], t["target"] + (
        "" if "width_ceiling" not in t else
        f" (the cheapest config alone reaches {t['width_ceiling']:.2f} x)")]
            for t in res["targets"]]
    lines.append(format_table(["", "target", "measured", "goal"], rows, title="\nSLO targets"))
    return "\n".join(lines)


