#!/usr/bin/python3
"""Docker images the tests build, named per checkout so that two checkouts on
one engine never overwrite each other's images mid-run, and labelled so that
`make clean-images` (this file with --clean) finds them all, dangling ones
included.

  CHECKOUT  first 10 hex digits of the SHA-256 of the checkout's real path
  tag(n)    pgstash-it/<n>:<CHECKOUT>
  LABEL     pgstash.test.checkout=<CHECKOUT>, on every image the tests build
"""
import hashlib
import os
import shutil
import subprocess
import sys

REPO = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CHECKOUT = hashlib.sha256(REPO.encode()).hexdigest()[:10]
LABEL_KEY = "pgstash.test.checkout"
LABEL = f"{LABEL_KEY}={CHECKOUT}"
SOCKET = "/var/run/docker.sock"
BASE = "debian:bookworm-slim"


def tag(name):
    return f"pgstash-it/{name}:{CHECKOUT}"


def docker(*args, check=True, timeout=300, input=None):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def engine_answers():
    if not shutil.which("docker") or not os.path.exists(SOCKET):
        return False
    try:
        return docker("version", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_base(base=BASE, suite="bookworm"):
    """Makes `base` (debian:<suite>-slim) with docker/build-base.sh when it is absent.  None when it exists
    (now); else why it cannot be made, for the caller to skip with.  A failing build-base.sh is an error."""
    if docker("image", "inspect", base, check=False).returncode == 0:
        return None
    if shutil.which("debootstrap") is None:
        return f"no base image {base} and no debootstrap to make it (docker/build-base.sh)"
    r = subprocess.run([os.path.join(REPO, "docker", "build-base.sh")], capture_output=True, text=True,
                       timeout=1200, env=dict(os.environ, PGSTASH_BASE_IMAGE=base, PGSTASH_BASE_SUITE=suite))
    assert r.returncode == 0, f"docker/build-base.sh failed:\n{r.stderr}"
    return None


def prune_dangling():
    """Untagged images of this checkout: an earlier build that a rebuild replaced."""
    docker("image", "prune", "-f", "--filter", f"label={LABEL}", check=False)


def clean():
    """Removes the tagged images of this checkout, then the dangling ones (their
    untagged layers go with them); one image at a time, since removing one may
    already have removed another that was its parent."""
    rows = docker("image", "ls", "--filter", f"label={LABEL}", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"
                  ).stdout.split("\n")
    refs = sorted({r.split()[0] if not r.startswith("<none>") else r.split()[1] for r in rows if r.strip()})
    if not refs:
        print(f"no test images of this checkout ({LABEL})")
        return 0
    bad = 0
    for ref in refs:
        r = docker("image", "rm", "-f", ref, check=False)
        if r.returncode != 0 and "No such image" not in r.stderr:
            print(r.stderr.strip(), file=sys.stderr)
            bad += 1
    prune_dangling()
    print(f"removed {len(refs) - bad} test images of this checkout ({LABEL})")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--clean"]:
        sys.exit("usage: tests/integration/images.py --clean")
    if not shutil.which("docker"):
        sys.exit("docker is not installed: no images to clean")
    sys.exit(clean())
