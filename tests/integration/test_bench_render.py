"""bench/bench.py's verdicts (no benchmark is run: --render on the stored
results): PASS/FAIL only on dj-800, where the targets apply; the other sizes,
and a quick run's dj-200 alone, print "reference" and never FAIL."""
import json
import os
import subprocess
import sys

from helpers import REPO

BENCH = os.path.join(REPO, "bench", "bench.py")
LAST = os.path.join(REPO, "bench", "last-results.json")


def render(path):
    r = subprocess.run([sys.executable, BENCH, "--render", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and ("<=" in ln or ">=" in ln)]


def test_full_results_judge_dj800_only():
    rows = render(LAST)
    assert rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "FAIL" not in cells[1] and "PASS" not in cells[1] and "reference" in cells[1], row
        assert "PASS" in cells[2] or "FAIL" in cells[2], row


def test_quick_results_have_no_verdict(tmp_path):
    data = json.load(open(LAST))
    data["sizes"] = {"dj-200": data["sizes"]["dj-200"]}
    data["mode"] = "quick"
    p = tmp_path / "quick.json"
    p.write_text(json.dumps(data))
    rows = render(str(p))
    assert rows and all("FAIL" not in r and "PASS" not in r and "reference" in r for r in rows), rows
