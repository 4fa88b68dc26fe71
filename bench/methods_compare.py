"""Compare methods benchmark cells from several cells folders, paired by seed against Slim.

A screened variant (``bench/methods.py --set ... --cells-dir bench/results/cells-screen-<v>``)
keeps its cells apart from the protocol's; this puts them side by side on one MFLOPs range::

    python bench/methods_compare.py --network resnet20_quarter \\
        slim=bench/results/cells-resolve:slim \\
        pareco=bench/results/cells-resolve:pareco \\
        utargets=bench/results/cells-screen-utargets:pareco

Each argument is ``label=<cells folder>:<method>``; the label ``slim`` is the reference. Areas,
matched-MFLOPs accuracies and paired differences come from :func:`bench.methods_analysis.analyze`
over the seeds each label has (the area range spans every cell given). Percentage points; each
paired mean is also given in units of its spread and with its 95 % Student-t interval.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from scipy import stats

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.methods_analysis import analyze  # noqa: E402

SOURCE = re.compile(r"^(?P<label>[\w.-]+)=(?P<cells>.+):(?P<method>slim|pareco|twostage)$")


def load_cells(cells: Path, network: str, method: str) -> dict[int, dict[str, Any]]:
    """The finished runs of ``<cells>/<network>/<method>-seed<s>.json`` by seed."""
    out = {}
    for f in sorted((cells / network).glob(f"{method}-seed*.json")):
        cell = json.loads(f.read_text())
        if cell.get("status") in ("trained", "reused") and cell.get("run"):
            out[int(cell["seed"])] = cell["run"]
    return out


def compare(network: str, sources: dict[str, tuple[Path, str]]) -> dict[str, Any]:
    """:func:`analyze` of the labelled sources (``label -> (cells folder, method)``)."""
    runs = {label: load_cells(cells, network, method) for label, (cells, method) in sources.items()}
    empty = [label for label, seeds in runs.items() if not seeds]
    if empty:
        raise SystemExit(f"methods_compare.py: error: no finished {network} cells for "
                         f"{', '.join(empty)}")
    return analyze({network: runs}, list(sources))[network]


def confidence_interval(delta: dict[str, Any], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the paired mean (``delta``: :func:`~bench.methods_analysis.spread`
    of the per-seed differences, n >= 2): ``mean ± t(level, n - 1) · std / √n``."""
    n = delta["n"]
    half = stats.t.ppf(0.5 + level / 2, n - 1) * delta["std"] / math.sqrt(n)
    return delta["mean"] - half, delta["mean"] + half


def effect_size_text(delta: dict[str, Any]) -> str:
    """The paired mean in units of the paired spread (an effect size; issue 12's target is a
    positive mean above the spread, i.e. > 1) and its 95 % t-interval in pp, or nothing where
    the spread is undefined."""
    if delta["n"] < 2 or not delta["std"]:
        return ""
    ratio = delta["mean"] / delta["std"]
    lo, hi = confidence_interval(delta)
    where = "above" if ratio > 1 else "below" if ratio < -1 else "within"
    return (f"; mean/std {ratio:+.2f}, {where} the spread; "
            f"95 % t-interval [{100 * lo:+.2f}, {100 * hi:+.2f}] pp")


def report(doc: dict[str, Any]) -> str:
    lo, hi = doc["mflops_range"]
    lines = [f"area on [{lo:.3f}, {hi:.3f}] MFLOPs (test accuracy, %), per seed:"]
    for label, m in doc["methods"].items():
        per = ", ".join(f"s{s} {100 * a:.2f}" for s, a in sorted(m["area"]["per_seed"].items()))
        lines.append(f"  {label:>10s}: mean {100 * m['area']['mean']:.2f}  ({per})")
    for label, d in doc["vs_slim"].items():
        a = d["area_delta"]
        per = ", ".join(f"s{s} {100 * v:+.2f}" for s, v in sorted(a["per_seed"].items()))
        lines.append(f"  {label} - slim: mean {100 * a['mean']:+.2f} pp, std "
                     f"{100 * a['std']:.2f} pp over {a['n']} seed(s) ({per}){effect_size_text(a)}")
        matched = ", ".join(f"w{b} {100 * v['mean']:+.2f}" for b, v in d["matched_delta"].items()
                            if v["mean"] is not None)
        lines.append(f"    matched MFLOPs, mean over seeds: {matched}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", required=True, help="e.g. resnet20_quarter")
    p.add_argument("sources", nargs="+", metavar="LABEL=CELLS:METHOD")
    a = p.parse_args(argv)
    sources: dict[str, tuple[Path, str]] = {}
    for s in a.sources:
        m = SOURCE.match(s)
        if m is None:
            p.error(f"expected LABEL=CELLS_FOLDER:METHOD (method slim, pareco or twostage), "
                    f"got {s!r}")
        sources[m["label"]] = (Path(m["cells"]), m["method"])
    if "slim" not in sources:
        p.error("one source must be labelled slim (the reference of the paired differences)")
    print(report(compare(a.network, sources)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
