"""scripts/check-layers: the real build passes, and a planted upward call, an
upward include, a cycle inside one layer and a module with no layer each fail it.
The planted trees are compiled for real with cc, so nm reads real objects."""
import os
import shutil
import subprocess
import textwrap

import pytest

from helpers import REPO

CHECK = os.path.join(REPO, "scripts", "check-layers")
LAYERS = textwrap.dedent("""\
    # Layers
    ```layers
    L2: top
    L1: mid other
    L0: low
    ```
    """)


def check(*args):
    return subprocess.run(["/usr/bin/python3", CHECK, *args], capture_output=True, text=True, timeout=120)


def planted(tmp_path, sources):
    """Writes src/NAME.c for each source, compiles each to obj/src/NAME.o."""
    for d in ("src", "entrypoint", "obj/src"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    (tmp_path / "ARCH.md").write_text(LAYERS)
    for name, text in sources.items():
        c = tmp_path / "src" / f"{name}.c"
        c.write_text(textwrap.dedent(text))
        subprocess.run(["cc", "-c", "-o", str(tmp_path / "obj" / "src" / f"{name}.o"), str(c)], check=True,
                       cwd=tmp_path / "src")
    return ["--objdir", str(tmp_path / "obj"), "--srcdir", str(tmp_path), "--layers", str(tmp_path / "ARCH.md")]


DOWN = {
    "low": "int low_f(void) { return 1; }\n",
    "mid": "int low_f(void);\nint mid_f(void) { return low_f(); }\n",
    "top": "int mid_f(void);\nint top_f(void) { return mid_f(); }\n",
}


def test_real_build_passes():
    if not os.path.exists(os.path.join(REPO, "build", "release", "main.o")):
        pytest.skip("no release build (run make)")
    r = check()
    assert r.returncode == 0, r.stderr
    assert "every edge points down" in r.stdout


def test_planted_tree_that_points_down_passes(tmp_path):
    r = check(*planted(tmp_path, DOWN))
    assert r.returncode == 0, r.stderr


def test_upward_call_fails(tmp_path):
    src = dict(DOWN, low="int top_f(void);\nint low_f(void) { return top_f(); }\n")
    r = check(*planted(tmp_path, src))
    assert r.returncode == 1
    assert "low (layer 0) uses top (layer 2), which is above it: top_f" in r.stderr


def test_upward_include_fails(tmp_path):
    src = dict(DOWN, low='#include "top.h"\nint low_f(void) { return 1; }\n')
    args = planted(tmp_path / "t", {k: v for k, v in src.items() if k != "low"})
    (tmp_path / "t" / "src" / "top.h").write_text("int top_f(void);\n")
    (tmp_path / "t" / "src" / "low.c").write_text(src["low"])
    subprocess.run(["cc", "-c", "-o", str(tmp_path / "t" / "obj" / "src" / "low.o"), "low.c"], check=True,
                   cwd=tmp_path / "t" / "src")
    r = check(*args)
    assert r.returncode == 1
    assert 'includes: low (layer 0) uses top (layer 2)' in r.stderr


def test_cycle_within_a_layer_fails(tmp_path):
    src = dict(DOWN, mid="int other_f(void);\nint mid_f(void) { return other_f(); }\n",
               other="int mid_f(void);\nint other_f(void) { return mid_f(); }\n")
    r = check(*planted(tmp_path, src))
    assert r.returncode == 1
    assert "cycle" in r.stderr and "mid" in r.stderr and "other" in r.stderr


def test_module_without_layer_fails(tmp_path):
    src = dict(DOWN, stray="int stray_f(void) { return 0; }\n")
    r = check(*planted(tmp_path, src))
    assert r.returncode == 1
    assert "module stray is in no layer" in r.stderr
