"""The README's promise, as a new user would take it: a fresh Debian bookworm
container (debian:bookworm-slim; docker/build-base.sh makes it locally when it
cannot be pulled), this checkout copied in (the files git knows, as they are
in the work tree, without build output), and then only the README's lines:
the root form of the `git make` install, `make demo`, `make test`.  Green means
both exit 0 with no manual step, the demo shows a miss then a hit, and the
test run's last line says 0 failed.

The container has no Docker socket, so in there the Docker tests (the image
and the compose examples) skip, visibly: they are the ones this test cannot
host, and the outer suite runs them.  Everything else runs as on CI.

Slow (apt, both builds, the integration suite twice: 20-30 min on 2 idle cores; over an hour
when other builds share them), so
it runs only when PGSTASH_TEST_FRESH=1: `make test-fresh`, and .ci/run's
"fresh machine" stage.  The whole output, with the time of each phase, is
kept in tests/logs/fresh-machine.log.
"""
import io
import os
import re
import subprocess
import tarfile
import time
import uuid

import pytest

from helpers import REPO, need
from images import BASE, LABEL, ensure_base, engine_answers
import readme

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LOG = os.environ.get("PGSTASH_TEST_FRESH_LOG") or os.path.join(REPO, "tests", "logs", "fresh-machine.log")
TIMEOUT = int(os.environ.get("PGSTASH_TEST_FRESH_TIMEOUT", "4800"))


def checkout_tar():
    """The checkout as a new clone would have it, plus uncommitted edits: every
    file git tracks or would track, read from the work tree, under src/."""
    names = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.split(b"\0")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for n in sorted(set(x.decode() for x in names if x)):
            p = os.path.join(REPO, n)
            if os.path.lexists(p):
                tar.add(p, arcname="src/" + n, recursive=False)
    return buf.getvalue()


def host_network_setup(name):
    """What this host's network needs, not what the README says: the local CA
    certificates (a TLS-inspecting proxy) go where ca-certificates picks them
    up, and pip is told to use the system bundle, as the host's /etc/pip.conf
    does.  Without such a proxy there is nothing to copy."""
    local = "/usr/local/share/ca-certificates"
    certs = sorted(f for f in (os.listdir(local) if os.path.isdir(local) else []) if f.endswith(".crt"))
    if certs:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for c in certs:
                tar.add(os.path.join(local, c), arcname=f"usr/local/share/ca-certificates/{c}")
            if os.path.exists("/etc/pip.conf"):
                tar.add("/etc/pip.conf", arcname="etc/pip.conf")
        subprocess.run(["docker", "cp", "-", f"{name}:/"], input=buf.getvalue(), check=True, capture_output=True)
    return certs


def readme_commands():
    blocks = readme.code_blocks("Two commands on a fresh machine")
    root_line = [c for c in readme.shell_lines(blocks[0]) if not c.startswith("sudo ")]
    assert len(root_line) == 1, f"README: no single root form of the git/make line in {blocks[0]!r}"
    two = readme.shell_lines(blocks[1])
    assert two == ["make demo", "make test"], f"README's two commands are now {two}"
    return root_line[0], two


def test_readme_on_a_fresh_debian():
    need(os.environ.get("PGSTASH_TEST_FRESH") == "1",
         "the fresh-machine test runs with PGSTASH_TEST_FRESH=1 only (make test-fresh, .ci/run)")
    need(engine_answers(), "no Docker Engine answers at /var/run/docker.sock")
    why = ensure_base()
    need(why is None, why)
    first, two = readme_commands()
    phases = "\n".join(
        f'echo "=== fresh: {c}  (at $((SECONDS)) s)"; {c} </dev/null; echo "=== fresh: {c}: exit 0 at $SECONDS s"'
        for c in two)
    script = f"""set -eu
cd /src
echo "=== fresh: {first}"
{first} </dev/null >/tmp/apt.log 2>&1 || {{ cat /tmp/apt.log; exit 1; }}
echo "=== fresh: git and make installed at $SECONDS s"
git init -q . && git add -A && git -c user.email=t@t -c user.name=t commit -qm fresh
{phases}
echo "=== fresh: green in $SECONDS s"
"""
    name = f"pgstash-fresh-{uuid.uuid4().hex[:10]}"
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    t0 = time.monotonic()
    try:
        # CI's bound per integration run (.ci/run sets it) holds in there too.
        bound = [f"PGSTASH_TEST_TIMEOUT={os.environ['PGSTASH_TEST_TIMEOUT']}"] \
            if os.environ.get("PGSTASH_TEST_TIMEOUT") else []
        subprocess.run(["docker", "create", "--name", name, "--label", LABEL, "-e", "LANG=C.UTF-8",
                        *[x for b in bound for x in ("-e", b)], "-w", "/src", BASE, "bash", "-c", script],
                       check=True, capture_output=True)
        subprocess.run(["docker", "cp", "-", f"{name}:/"], input=checkout_tar(), check=True, capture_output=True)
        certs = host_network_setup(name)
        with open(LOG, "w") as log:
            log.write(f"# {BASE}, checkout of {REPO}, no Docker socket; README lines: {first!r}, {two}\n"
                      f"# from the host: CA certificates {certs or 'none'}, /etc/pip.conf\n")
            log.flush()
            try:
                r = subprocess.run(["docker", "start", "-a", name], stdout=log, stderr=subprocess.STDOUT,
                                   timeout=TIMEOUT)
                rc = r.returncode
            except subprocess.TimeoutExpired:
                rc = None
            log.write(f"\n# fresh machine: exit status {rc}, {time.monotonic() - t0:.0f} s in all\n")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    out = open(LOG, encoding="utf-8", errors="replace").read()
    print(f"\nfresh machine: {time.monotonic() - t0:.0f} s, log {LOG}")
    assert rc == 0, f"the fresh machine did not finish green (exit status {rc}); see {LOG}:\n{out[-3000:]}"
    assert "cache miss" in out and "cache hit" in out, f"the demo did not show a miss then a hit; see {LOG}"
    last = re.findall(r"^\d+ passed, (\d+) failed(?:, \d+ skipped)?$", out, re.M)
    assert last and last[-1] == "0", f"make test's last line is not \"N passed, 0 failed\"; see {LOG}"
