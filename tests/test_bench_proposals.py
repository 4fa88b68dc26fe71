"""``bench/proposals.py``: the batched and the one-at-a-time direct solve, side by side."""

import json

from bench.proposals import main


def test_both_ways_return_the_same_configurations(tmp_path, capsys):
    out = tmp_path / "proposals.json"
    assert main(["--counts", "3", "--seeds", "0", "--history", "12", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    (cell,) = doc["cells"]
    assert cell["count"] == 3 and cell["same_configs"] is True
    assert cell["one_by_one_s"] > 0 and cell["batched_s"] > 0 and cell["max_flops_error"] <= 0.02
    assert doc["history"] == 12 and "load_before" in doc
    printed = capsys.readouterr().out
    assert "one by one s" in printed and "|H| = 12" in printed
