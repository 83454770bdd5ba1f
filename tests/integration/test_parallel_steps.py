"""Issue 18: command steps of a miss that migrate different databases run at once (a multi-repo miss takes
about its slowest step, not the sum); `after = NAME` orders them; steps on one database keep file order;
the first failure stops the others.  Each step records when it ran, so overlap is checked, not guessed
from timings on a busy machine."""
import os
import re

import pytest


def step(name, db, body, after=None):
    return (f"[step {name}]\nroot = steps\nmigrations = {name}.sql\ndatabase = {db}\n"
            + (f"after = {after}\n" if after else "")
            + f"run = /bin/sh -c '{body}'\n")


def stamp(name, seconds):
    """A step that notes its start and end (monotonic enough: date with ns) around a sleep and a table."""
    return (f"date +%s.%N >{name}.start; sleep {seconds}; "
            f"psql -X -q -v ON_ERROR_STOP=1 -c \"create table t_{name} (id int)\"; date +%s.%N >{name}.end")


def times(work, name):
    d = os.path.join(work.path, "steps")
    with open(os.path.join(d, f"{name}.start")) as f, open(os.path.join(d, f"{name}.end")) as g:
        return float(f.read()), float(g.read())


def setup_steps(work, names):
    for n in names:
        work.file(f"steps/{n}.sql", f"-- {n}\n")


def prepare(work, cfg):
    return work.run("prepare", config=cfg, env={"PGSOCKET": work.sock, "PGSTASH_SOCKET_DIR": work.sock},
                    timeout=300)


def test_steps_on_different_databases_run_at_once(work):
    setup_steps(work, ["a", "b", "c"])
    cfg = work.file("p.ini", "[database]\nname = app\nextra = other third\n"
                    + step("a", "app", stamp("a", 2)) + step("b", "other", stamp("b", 2))
                    + step("c", "third", stamp("c", 2)))
    r = prepare(work, cfg)
    assert r.rc == 0, r
    assert "running steps a, b, c at once (different databases)" in r.stderr, r
    (a0, a1), (b0, b1), (c0, c1) = times(work, "a"), times(work, "b"), times(work, "c")
    assert b0 < a1 and c0 < a1 and a0 < b1, ((a0, a1), (b0, b1), (c0, c1))
    for n, db in (("a", "app"), ("b", "other"), ("c", "third")):
        assert work.sql(f"select count(*) from t_{n}", db=db) == "0"
    assert "step a finished" in r.stderr and "step b finished" in r.stderr, r


def test_same_database_and_after_keep_order(work):
    setup_steps(work, ["a", "b", "c"])
    # b shares a's database: after a.  c is on another database but names b in after: after b.
    cfg = work.file("p.ini", "[database]\nname = app\nextra = other\n"
                    + step("a", "app", stamp("a", 1)) + step("b", "app", stamp("b", 1))
                    + step("c", "other", stamp("c", 1), after="b"))
    r = prepare(work, cfg)
    assert r.rc == 0, r
    assert "at once" not in r.stderr, r
    (a0, a1), (b0, b1), (c0, c1) = times(work, "a"), times(work, "b"), times(work, "c")
    assert a1 <= b0 and b1 <= c0, ((a0, a1), (b0, b1), (c0, c1))
    k1 = work.key(config=cfg)
    assert "after=b" in work.run("key", "--explain", config=cfg).stdout
    cfg2 = work.file("p2.ini", open(cfg).read().replace("after = b\n", ""))
    assert work.key(config=cfg2) != k1


def test_after_must_name_an_earlier_step(work):
    setup_steps(work, ["a", "b"])
    cfg = work.file("p.ini", "[database]\nname = app\nextra = other\n"
                    + step("a", "app", "true", after="b") + step("b", "other", "true"))
    r = work.run("key", config=cfg)
    assert r.rc == 2, r
    assert re.search(r"p\.ini:\d+: step \"a\": after = b: no step of that name before this one", r.stderr), r


def test_a_failing_step_stops_the_others(work):
    setup_steps(work, ["slow", "bad"])
    cfg = work.file("p.ini", "[database]\nname = app\nextra = other\n"
                    + step("slow", "app", "echo started; sleep 60; echo never")
                    + step("bad", "other", "sleep 1; echo broken >&2; exit 3"))
    r = prepare(work, cfg)
    assert r.rc == 3, r
    assert r.seconds < 40, r
    assert "[step slow] started" in r.stderr and "[step bad] broken" in r.stderr, r
    assert "[step slow] never" not in r.stderr, r
    assert "step bad failed: exit status 3" in r.stderr, r
    assert "stopping step slow: step bad failed" in r.stderr, r
    assert re.search(r"step slow stopped after \d+\.\d s: step bad failed", r.stderr), r
    # Nothing was cached, PGDATA left as before.
    assert work.run("ls", "--json", config=cfg).stdout.strip() == "[]"


def test_a_step_that_floods_its_output_still_times_out(work):
    """A step that writes without pause (faster than pgstash prints) once kept the poll loop reading
    forever: no deadline, no signal, no other step was looked at.  Its output is read in bounded
    rounds now, so its timeout stops it.  `yes` writes a line faster than pgstash prints one;
    pgstash's stderr goes to a file (tens of MB)."""
    import subprocess
    import time
    from helpers import IS_ROOT, USER_IDS
    setup_steps(work, ["flood", "calm"])
    cfg = work.file("p.ini", "[pgstash]\nstep_timeout = 3\n[database]\nname = app\nextra = other\n"
                    + step("flood", "app", "exec yes") + step("calm", "other", stamp("calm", 1)))
    log = os.path.join(work.path, "stderr.log")
    kw = dict(user=USER_IDS[0], group=USER_IDS[1], extra_groups=[]) if IS_ROOT and USER_IDS is not None else {}
    env = work.env({"PGSOCKET": work.sock, "PGSTASH_SOCKET_DIR": work.sock})
    t0 = time.monotonic()
    with open(log, "wb") as err:
        p = subprocess.Popen([work.binary, f"--config={cfg}", "prepare"], env=env, cwd=work.path,
                             stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                             **kw)
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # pgstash, and the step it never stopped (its own group: the session's)
            subprocess.run(["pkill", "-9", "-s", str(p.pid)])
            p.wait()
            pytest.fail("pgstash never stopped a step that floods its output")
    took = time.monotonic() - t0
    with open(log, "rb") as f:
        f.seek(max(0, os.path.getsize(log) - 65536))
        tail = f.read().decode(errors="replace")
    assert p.returncode != 0, tail
    assert "step flood failed: timed out after 3 s" in tail, tail
    assert took < 60, took
