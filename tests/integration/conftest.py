"""Fixtures for every integration test; the machinery is in helpers.py.

  work      one test's scratch dir under /tmp, owned by the unprivileged user
            (PGDATA, cache, sockets); kept, with its logs copied to
            tests/logs/, when the test fails
  pgstash   work.run: runs $PGSTASH_BIN with args/env/timeout, as the
            `postgres` user when the suite runs as root (as_root=True to not)
  examples  a private copy of examples/ in the work dir; its pgstash.ini path
"""
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import contextlib

import pytest

from helpers import IS_ROOT, LOG_ROOT, PG_BINDIR, REPO, RUN_USER, USER_IDS, Work, need


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds real caches (initdb + migrations)")
    config.addinivalue_line("markers", "root: needs to run pgstash as root")
    config.addinivalue_line("markers", "docker: needs a Docker Engine on /var/run/docker.sock")


class FileProgress:
    """One line per finished test file, "done FILE: N passed, N failed[, N
    skipped] (T s)", so that a long run shows where it is (tests/run puts these
    lines on the terminal; the rest of pytest's output goes to the log).
    Files run one after the other (no xdist here), so a report from another
    file means the previous one is done."""

    def __init__(self, config):
        self.config = config
        self.current = None
        self.counts = None
        self.t0 = 0.0

    def _flush(self):
        if self.current is None:
            return
        p, f, s = self.counts
        line = f"done {self.current}: {p} passed, {f} failed{f', {s} skipped' if s else ''} " \
               f"({time.monotonic() - self.t0:.1f} s)"
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.ensure_newline()
            tr.write_line(line)
        else:
            print(line, flush=True)
        self.current = None

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        f = report.nodeid.split("::", 1)[0]
        if f != self.current:
            self._flush()
            self.current, self.counts, self.t0 = f, [0, 0, 0], time.monotonic()
        if report.failed:
            self.counts[1] += 1
        elif report.skipped:
            self.counts[2] += 1
        elif report.when == "call":
            self.counts[0] += 1

    def pytest_sessionfinish(self):
        self._flush()


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):
        session.config.pluginmanager.register(FileProgress(session.config), "pgstash-file-progress")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def pgstash_bin():
    src = os.path.abspath(os.environ.get("PGSTASH_BIN") or os.path.join(REPO, "pgstash"))
    if not os.access(src, os.X_OK):
        pytest.fail(f"no pgstash binary at {src}: run `make` (or set PGSTASH_BIN)", pytrace=False)
    d = tempfile.mkdtemp(prefix="pgstash-it-bin-")
    os.chmod(d, 0o755)
    dst = os.path.join(d, "pgstash")
    shutil.copy2(src, dst)
    os.chmod(dst, 0o755)
    yield dst
    shutil.rmtree(d, ignore_errors=True)


def _test_dir_name(nodeid):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:80]


@pytest.fixture()
def work(request, pgstash_bin):
    need(PG_BINDIR is not None, "no PostgreSQL server binaries found (install postgresql-15)")
    need(not IS_ROOT or USER_IDS is not None, f"running as root but there is no \"{RUN_USER}\" user")
    name = _test_dir_name(request.node.nodeid)
    path = tempfile.mkdtemp(prefix=f"pgstash-it-{name[:40]}-")
    os.chmod(path, 0o755)
    w = Work(path, pgstash_bin, name)
    yield w
    w.stop_leftover_servers()
    failed = any(getattr(request.node, f"rep_{when}", None) is not None
                 and getattr(request.node, f"rep_{when}").failed for when in ("setup", "call"))
    if failed:
        dest = os.path.join(LOG_ROOT, name)
        shutil.rmtree(dest, ignore_errors=True)
        w.save_logs(dest)
        sys.stderr.write(f"\nkept work dir {path}; logs in {dest}\n")
    elif os.environ.get("PGSTASH_TEST_KEEP") != "1":
        # chmod 000 files from permission tests must not stop the cleanup
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, n), stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def pgstash(work):
    """The runner: pgstash(*args, env=..., timeout=..., as_root=..., config=...) → Result."""
    return work.run


@pytest.fixture()
def examples(work):
    """A private copy of examples/ in the work dir; returns its pgstash.ini path."""
    return work.copy_examples()
