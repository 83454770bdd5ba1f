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


def render(path, verdicts_only=True):
    r = subprocess.run([sys.executable, BENCH, "--render", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.splitlines()
            if ln.startswith("| ") and ("<=" in ln or ">=" in ln or not verdicts_only)]


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


def test_signature_verify_is_judged_on_every_size(tmp_path):
    """Issue 14's "verification costs <= 5 ms per hit" does not depend on the project's size: a quick
    run (dj-200 only) gives it a verdict, and only it."""
    data = json.load(open(LAST))
    data["sizes"] = {"dj-200": data["sizes"]["dj-200"]}
    data["mode"] = "quick"
    data["sizes"]["dj-200"]["ratios"]["verify_ms"] = 0.2
    p = tmp_path / "quick.json"
    p.write_text(json.dumps(data))
    rows = render(str(p))
    verify = [r for r in rows if "signature verify" in r]
    assert len(verify) == 1 and "0.200 PASS" in verify[0], rows
    assert all("PASS" not in r and "FAIL" not in r for r in rows if r not in verify), rows
    data["sizes"]["dj-200"]["ratios"]["verify_ms"] = 7.5
    p.write_text(json.dumps(data))
    assert any("signature verify" in r and "FAIL" in r for r in render(str(p)))


LAST_INC = os.path.join(REPO, "bench", "last-incremental.json")


def test_incremental_section_renders_issue18_targets(tmp_path):
    """`bench.py --incremental`'s results (bench/README.md "Issue 18") render with a verdict per target,
    recomputed from the ratios."""
    rows = render(LAST_INC, verdicts_only=False)
    labels = ["key − glob key", "two-step miss", "prefix build /", "installed-package migration"]
    for label in labels:
        row = [r for r in rows if label in r]
        assert len(row) == 1 and ("PASS" in row[0] or "FAIL" in row[0]), (label, rows)
    data = json.load(open(LAST_INC))
    data["incremental"]["ratios"]["discover_over_glob_s"] = 0.9
    p = tmp_path / "inc.json"
    p.write_text(json.dumps(data))
    row = [r for r in render(str(p)) if "key − glob key" in r]
    assert row and "+0.900 s" in row[0] and "FAIL" in row[0], row
