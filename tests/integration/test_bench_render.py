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


def curve_size(kind, files, pgdata_mib, hit, limit, restore):
    """A size of bench/curve.py's results, with what its table and plot read."""
    stat = lambda v: {"median": v, "min": v * 0.9, "max": v * 1.2, "n": 1}
    noise = {"load1": 2.0, "psi_io_some_avg10": 1.0, "create_us": 20}
    return {"kind": kind, "files": files, "pgdata_bytes": pgdata_mib << 20, "archive_bytes": pgdata_mib << 18,
            "summary": {"hit": {"total": stat(hit)}, "limit": {"total": stat(limit)},
                        "pg_restore": {"total": stat(restore)}},
            "ratios": {"hit_vs_limit": hit / limit, "restore_vs_hit": restore / hit, "snapshot_ratio": 0.25},
            "hit_s": hit, "limit_s": limit, "pg_restore_s": restore,
            "runs": {"hit": [{"noise": noise}]}}


def test_curve_fixture_size_renders_apart_from_pgbench(tmp_path):
    """bench/curve.py's djfix-* (a Django loaddata step) is a data-heavy size of its own kind: a row of the
    table, squares beside pgbench's circles on the data-heavy plot, and not a point of pgbench's growth
    per GiB (the slope between two pgbench sizes)."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    try:
        import curve
    finally:
        sys.path.pop(0)
    sizes = {"dj-200": curve_size("django", 3086, 61, 0.9, 0.9, 3.4),
             "djfix-100m": curve_size("fixture", 1300, 2048, 9.0, 3.0, 60.0),
             "pgb-100m": curve_size("pgbench", 1279, 128, 0.8, 1.0, 4.5),
             "pgb-1g": curve_size("pgbench", 1279, 1152, 3.8, 4.0, 30.1)}
    per_gib = curve.growth(sizes, "pgbench", "pgdata_bytes", 1 << 30)
    assert abs(per_gib["hit_s"] - 3.0) < 1e-9 and abs(per_gib["pg_restore_s"] - 25.6) < 1e-9, per_gib
    data = {"date": "2026-12-02 13:00:00", "mode": "quick", "reps": 1, "elapsed_s": 60, "fs": "tmp",
            "machine": {"nproc": 2, "pg_version": "15", "pgstash": "pgstash"}, "sizes": sizes,
            "growth": {"per_1000_files": {}, "per_gib": per_gib}}
    p = tmp_path / "curve.json"
    p.write_text(json.dumps(data))
    r = subprocess.run([sys.executable, os.path.join(REPO, "bench", "curve.py"), "--render", str(p),
                        "--publish", "no"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    row = [ln for ln in r.stdout.splitlines() if ln.startswith("| djfix-100m |")]
    assert len(row) == 1 and "| 2,048 MiB |" in row[0] and "| 3.00 |" in row[0], r.stdout
    assert "| per GiB (data-heavy: pgbench) | 3.000 s | 3.000 s | 25.600 s |" in r.stdout, r.stdout
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots()
    assert curve.plot_kinds(ax, data, (("pgbench", ""), ("fixture", ", Django fixture")), "pgdata_bytes", 1 << 30)
    labels = ax.get_legend_handles_labels()[1]
    assert "pgstash hit" in labels and "pgstash hit, Django fixture" in labels, labels
    assert not curve.plot_kinds(ax, data, (("nothing", ""),), "files", 1)
    plt.close(fig)
