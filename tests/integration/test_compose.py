"""The compose examples (compose-examples/) as users run them, with
docker-compose and a real Docker Engine.

- django-flask, the cache as the CI recipes keep it (a host directory): the
  first ./run.sh is a cache miss (both repos' migration containers run, the
  entry is published); the second one, on a fresh PGDATA volume and a copy of
  that directory (a CI cache's save and restore), is a hit (no migration
  container is created at all); both repos' test suites pass both times.
- django-flask with its cache volume, `docker stop` of the sidecar while a
  migration container runs: no orphaned step container, no partial cache
  entry, PGDATA emptied.
- single-django: ./run.sh turns healthy with the command step's migrations in,
  on PostgreSQL 15 and on 17 (its image FROM the pgstash image built with
  PG_MAJOR=17 on trixie; PGSTASH_TEST_IMAGE_17 names a prebuilt one).

Each test has its own compose project (unique name) and takes it down with
its volumes at the end, whatever happened.  The images are built once per
session, named per checkout (images.py): the pgstash image as
pgstash-it/compose:<checkout> (PGSTASH_IMAGE), the example images as
pgstash-it/example-<name>:<checkout> through an override file per example
(checkout.yml, with the example's pgstash.ini rewritten to those names), all
labelled for `make clean-images`; the dangling images a rebuild leaves are
pruned.

Skipped, visibly, without a Docker Engine or docker-compose, and in the asan
pass of tests/run: these tests exercise the image, whose pgstash is compiled
inside the Docker build, not the binary under test, so a second pass would
repeat the first one exactly (PGSTASH_TEST_COMPOSE=always runs them anyway).
"""
import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from helpers import REPO, free_port, need
from images import LABEL, LABEL_KEY, CHECKOUT, SOCKET, docker, engine_answers, ensure_base, prune_dangling, tag

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXAMPLES = os.path.join(REPO, "compose-examples")
DJANGO_FLASK = os.path.join(EXAMPLES, "django-flask")
SINGLE = os.path.join(EXAMPLES, "single-django")
IMAGE = os.environ.get("PGSTASH_TEST_COMPOSE_IMAGE", tag("compose"))
# The example images, by the names their compose files and pgstash.ini give them.
EXAMPLE_IMAGES = {
    DJANGO_FLASK: {"django-tests": ("pgstash-example/django:latest", tag("example-django")),
                   "flask-tests": ("pgstash-example/flask:latest", tag("example-flask"))},
    SINGLE: {"db": ("pgstash-example/single-django:latest", tag("example-single-django"))},
}
OVERRIDES = os.path.join("/tmp", f"pgstash-it-compose-{CHECKOUT}")


def checkout_ini(directory):
    """The example's pgstash.ini with this checkout's image names."""
    with open(os.path.join(directory, "pgstash.ini")) as f:
        ini = f.read()
    for old, new in EXAMPLE_IMAGES[directory].values():
        ini = ini.replace(f"image      = {old}\n", f"image      = {new}\n")
    return ini


def checkout_override(directory):
    """An override file for the example: this checkout's image names and labels
    (the build's labels merge into the example's build section), and its
    pgstash.ini rewritten to those names, mounted over the example's."""
    name = os.path.basename(directory)
    os.makedirs(OVERRIDES, mode=0o755, exist_ok=True)
    ini = os.path.join(OVERRIDES, f"{name}.ini")
    with open(ini, "w") as f:
        f.write(checkout_ini(directory))
    os.chmod(ini, 0o644)
    services = {"db": {}}
    for svc, (_, new) in EXAMPLE_IMAGES[directory].items():
        services.setdefault(svc, {})["image"] = new
    lines = ['version: "2.4"', "services:"]
    for svc, conf in services.items():
        lines += [f"  {svc}:", "    build:", "      labels:", f'        {LABEL_KEY}: "{CHECKOUT}"']
        if "image" in conf:
            lines.append(f"    image: {conf['image']}")
        if svc == "db":
            if directory == DJANGO_FLASK:  # the pgstash image's build stage (Dockerfile)
                lines += ["      args:", f'        PGSTASH_TEST_CHECKOUT: "{CHECKOUT}"']
            lines += ["    volumes:", f"      - {ini}:/etc/pgstash/pgstash.ini:ro"]
    path = os.path.join(OVERRIDES, f"{name}.yml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def compose_command():
    """docker-compose (v1), else the `docker compose` plugin, else None (run.sh picks the same way)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and docker("compose", "version", check=False, timeout=20).returncode == 0:
        return ["docker", "compose"]
    return None


def compose_works(cmd):
    """(True, None), or (False, why) when the compose command cannot talk to the engine."""
    r = subprocess.run(cmd + ["-p", "pgstash-it-probe", "ps", "-q"], cwd=DJANGO_FLASK, env=base_env(),
                       capture_output=True, text=True, timeout=60)
    if r.returncode == 0:
        return True, None
    last = (r.stderr.strip().splitlines() or ["no message"])[-1]
    why = f"{' '.join(cmd)} does not work here: {last}"
    if "http+docker" in r.stderr:
        # docker-compose 1.29's docker-py 5 and requests >= 2.32 do not go together.
        why += " (a requests >= 2.32, e.g. pip-installed in /usr/local, shadows Debian's python3-requests)"
    return False, why


def base_env(**extra):
    env = dict(os.environ)
    # Whatever the caller's shell has must not steer the stacks.
    for k in ("PGSTASH_CACHE", "PGSTASH_PORT", "POSTGRES_PASSWORD", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME",
              "KEEP", "NO_BUILD", "PGSTASH_KEYS", "PGSTASH_CACHE_MODE", "PGSTASH_TRUSTED_KEYS",
              "PGSTASH_SIGNING_KEY_FILE"):
        env.pop(k, None)
    env["PGSTASH_IMAGE"] = IMAGE
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="session")
def compose_images():
    """Builds every image the examples use, once; returns the compose command."""
    need(os.environ.get("PGSTASH_TEST_VARIANT") != "asan" or os.environ.get("PGSTASH_TEST_COMPOSE") == "always",
         "compose examples run in the release pass only: they test the image, whose pgstash is built inside "
         "Docker, not the asan binary (PGSTASH_TEST_COMPOSE=always to run them here too)")
    need(engine_answers(), f"no Docker Engine answers at {SOCKET}")
    cmd = compose_command()
    need(cmd is not None, "neither docker-compose nor the docker compose plugin is installed")
    need(*compose_works(cmd))
    why = ensure_base()
    need(why is None, why)
    t0 = time.monotonic()
    # django-flask builds the pgstash image (as IMAGE) and the two app images;
    # single-django's image starts FROM IMAGE, so it comes second.
    for d in (DJANGO_FLASK, SINGLE):
        r = subprocess.run(cmd + ["-p", "pgstash-it-build", "-f", "docker-compose.yml", "-f", checkout_override(d),
                                  "build"], cwd=d, env=base_env(), capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, f"compose build in {d} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    prune_dangling()
    print(f"\nbuilt the compose examples' images in {time.monotonic() - t0:.1f} s")
    return cmd


class Stack:
    """One compose project of one example directory; `down -v` at the end."""

    def __init__(self, cmd, directory, files=(), **env):
        self.cmd = cmd
        self.dir = directory
        self.project = f"pgstash-it-{uuid.uuid4().hex[:10]}"
        self.files = []
        names = ("docker-compose.yml", checkout_override(directory)) + tuple(files)
        for f in names:
            self.files += ["-f", f]
        # run.sh's compose calls take the same files.
        self.env = base_env(COMPOSE_PROJECT_NAME=self.project, NO_BUILD=1, COMPOSE_FILE=":".join(names),
                            COMPOSE_PATH_SEPARATOR=":", **env)
        self.owners = set()  # sidecar container ids: their step containers are removed too

    def compose(self, *args, check=True, timeout=300):
        r = subprocess.run(self.cmd + ["-p", self.project] + self.files + list(args), cwd=self.dir, env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def run_sh(self, *args, timeout=600, **env):
        """The example's own one command, on this project."""
        e = dict(self.env, **{k: str(v) for k, v in env.items()})
        return subprocess.run([os.path.join(self.dir, "run.sh"), *args], cwd=self.dir, env=e,
                              capture_output=True, text=True, timeout=timeout)

    def db(self):
        """The sidecar's container id (running or not)."""
        ids = self.compose("ps", "-q", "db").stdout.split()
        assert len(ids) == 1, f"expected one db container, got {ids}"
        self.owners.add(ids[0])
        return ids[0]

    def volume(self, name):
        return f"{self.project}_{name}"

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=180)
        for owner in self.owners:
            left = docker("ps", "-aq", "--filter", f"label=pgstash.owner={owner}", check=False).stdout.split()
            if left:
                docker("rm", "-f", "-v", *left, check=False)


def logs(container):
    r = docker("logs", container, check=False)
    return r.stdout + r.stderr


def step_containers(owner, since, until):
    """(name, step) of every container created for sidecar `owner` between since and until (Unix times)."""
    r = docker("events", "--since", str(int(since)), "--until", str(int(until) + 1), "--filter", "type=container",
               "--filter", "event=create", "--filter", f"label=pgstash.owner={owner}", "--format",
               "{{json .Actor.Attributes}}", timeout=60)
    out = []
    for line in r.stdout.splitlines():
        a = json.loads(line)
        out.append((a.get("name"), a.get("pgstash.step")))
    return sorted(out, key=lambda x: x[1] or "")


def leftovers(owner):
    return docker("ps", "-a", "--filter", f"label=pgstash.owner={owner}", "--format", "{{.ID}} {{.Names}} {{.Status}}"
                  ).stdout.split("\n")[:-1]


def cache_files(source):
    """Paths of the files in a cache (a volume name or a host directory), relative to its pgstash-v1/."""
    r = docker("run", "--rm", "--entrypoint", "find", "-v", f"{source}:/c:ro", IMAGE, "/c", "-mindepth", "1",
               "-type", "f", "-printf", "%P\\n")
    return sorted(p[len("pgstash-v1/"):] if p.startswith("pgstash-v1/") else p for p in r.stdout.split())


def test_django_flask_miss_then_hit(compose_images, tmp_path):
    # The cache as the CI recipes (compose-examples/ci) keep it: a host
    # directory, saved after the first job and restored, under another path
    # and owner, for the second.
    job1 = tmp_path / "job1" / ".pgstash-cache"
    job2 = tmp_path / "job2" / ".pgstash-cache"
    job1.mkdir(parents=True)
    stack = Stack(compose_images, DJANGO_FLASK, PGSTASH_CACHE=job1)
    try:
        # ---- job 1: empty cache → miss: both migration containers run
        t0 = time.time()
        r = stack.run_sh(KEEP=1)
        t1 = time.time()
        out = r.stdout + r.stderr
        db1 = stack.db()
        log1 = logs(db1)
        assert r.returncode == 0, f"run.sh (miss) failed:\n{out}\n--- sidecar\n{log1}"
        assert "cache miss" in log1 and "cached" in log1, log1
        assert "[step django]" in log1 and "Applying shop.0004_product_category_price_index... OK" in log1, log1
        assert "[step flask]" in log1 and "Running upgrade 0002 -> 0003" in log1, log1
        assert "Using existing test database" in out and "Ran 5 tests" in out and "\nOK" in out, out
        assert "4 passed" in out, out
        created = step_containers(db1, t0, t1)
        assert [s for _, s in created] == ["django", "flask"], created
        assert leftovers(db1) == [], "step containers left behind"
        key = stack.run_sh("key").stdout.strip()
        assert len(key) == 64, key
        assert f"key {key}" in log1, log1
        entries = json.loads(stack.compose("exec", "-T", "db", "pgstash", "ls", "--json").stdout)
        assert [e["key"] for e in entries] == [key], entries
        files = [p for p in cache_files(job1) if not p.startswith(".locks/")]
        assert files == [f"{key}.meta", f"{key}.tar.zst"], files

        # ---- the CI's save and restore: the recipes' chown back to the CI
        # user, then a copy elsewhere (owned by root here, not by uid 999)
        docker("run", "--rm", "--entrypoint", "chown", "-v", f"{job1}:/c", IMAGE, "-R", "65534:65534", "/c")
        assert {os.stat(os.path.join(d, n)).st_uid for d, _, ns in os.walk(job1) for n in ns} == {65534}
        shutil.copytree(job1, job2)

        # ---- job 2: fresh PGDATA volume, restored cache → hit, no migration container
        stack.env["PGSTASH_CACHE"] = str(job2)
        t0 = time.time()
        r = stack.run_sh(KEEP=1)
        t1 = time.time()
        out = r.stdout + r.stderr
        db2 = stack.db()
        log2 = logs(db2)
        assert db2 != db1
        assert r.returncode == 0, f"run.sh (hit) failed:\n{out}\n--- sidecar\n{log2}"
        assert f"cache hit {key[:12]}" in log2, log2
        assert "[step" not in log2 and "cache miss" not in log2, log2
        assert "Ran 5 tests" in out and "\nOK" in out and "4 passed" in out, out
        assert step_containers(db2, t0, t1) == []
        assert leftovers(db2) == []
    finally:
        stack.down()
        # What the sidecar wrote belongs to uid 999: remove it as root in a container.
        docker("run", "--rm", "--entrypoint", "rm", "-v", f"{tmp_path}:/t", IMAGE, "-rf", "/t/job1", "/t/job2",
               check=False)


def test_docker_stop_during_a_miss_leaves_nothing_behind(compose_images, tmp_path):
    # The same stack with a slow Django step: a config of the test's own (its
    # `run` differs, and so does its key), mounted over the example's.
    ini = checkout_ini(DJANGO_FLASK)
    fast = "run        = python3 manage.py migrate --noinput\n"
    assert fast in ini
    slow_ini = tmp_path / "pgstash.ini"
    slow_ini.write_text(ini.replace(fast, "run        = /bin/sh -c 'echo sleeping; sleep 300; "
                                          "exec python3 manage.py migrate --noinput'\n"))
    os.chmod(tmp_path, 0o755)
    os.chmod(slow_ini, 0o644)
    override = tmp_path / "slow.yml"
    override.write_text('version: "2.4"\nservices:\n  db:\n    volumes:\n'
                        f"      - {slow_ini}:/etc/pgstash/pgstash.ini:ro\n")
    stack = Stack(compose_images, DJANGO_FLASK, files=(str(override),))
    try:
        stack.compose("up", "-d", "--no-build", "db")
        db = stack.db()
        deadline = time.monotonic() + 180
        while "[step django] sleeping" not in logs(db):
            assert time.monotonic() < deadline, f"the slow step never started:\n{logs(db)}"
            assert docker("inspect", "-f", "{{.State.Running}}", db).stdout.strip() == "true", logs(db)
            time.sleep(0.3)
        running = leftovers(db)
        assert len(running) == 1 and "pgstash-django-" in running[0], running

        t0 = time.monotonic()
        docker("stop", "-t", "30", db, timeout=120)
        stop_seconds = time.monotonic() - t0
        state = json.loads(docker("inspect", db).stdout)[0]["State"]
        log = logs(db)
        # SIGINT (the image's STOPSIGNAL) → 128 + 2, well before the kill timeout
        assert state["ExitCode"] == 130, f"exit code {state['ExitCode']}\n{log}"
        assert stop_seconds < 20, f"docker stop took {stop_seconds:.1f} s\n{log}"
        assert leftovers(db) == [], f"orphaned step containers\n{log}"
        files = cache_files(stack.volume("pgstash-cache"))
        assert not [p for p in files if p.startswith(".tmp/")], files
        assert not [p for p in files if not p.startswith(".locks/")], f"partial cache entry: {files}"
        r = docker("run", "--rm", "--entrypoint", "find", "-v", f"{stack.volume('pgdata')}:/d:ro", IMAGE, "/d",
                   "-mindepth", "1")
        assert r.stdout == "", f"PGDATA not emptied:\n{r.stdout}"
    finally:
        stack.down()


def test_single_django_turns_healthy_migrated(compose_images):
    stack = Stack(compose_images, SINGLE, PGSTASH_PORT=free_port())
    try:
        r = stack.run_sh()
        db = stack.db()
        log = logs(db)
        assert r.returncode == 0, f"run.sh failed:\n{r.stdout}\n{r.stderr}\n--- sidecar\n{log}"
        assert "cache miss" in log and "[step django]   Applying shop.0004_product_category_price_index... OK" in log, log
        sql = stack.compose("exec", "-T", "db", "psql", "-U", "postgres", "-d", "app", "-tAc",
                            "select string_agg(slug, ',' order by slug) from shop_category").stdout.strip()
        assert sql == "books,games,tools"
    finally:
        stack.down()


@pytest.fixture(scope="session")
def single_django_17(compose_images):
    """single-django's image FROM the pgstash image on PostgreSQL 17 (trixie):
    PGSTASH_TEST_IMAGE_17, else built from this checkout as pgstash-it/image-17."""
    base = os.environ.get("PGSTASH_TEST_IMAGE_17")
    if not base:
        why = ensure_base("debian:trixie-slim", "trixie")
        need(why is None, why)
        base = tag("image-17")
        docker("build", "-q", "--label", LABEL, "--build-arg", "PG_MAJOR=17", "--build-arg", "DEBIAN_SUITE=trixie",
               "--build-arg", f"PGSTASH_TEST_CHECKOUT={CHECKOUT}", "-t", base, REPO, timeout=1800)
    image = tag("example-single-django-17")
    docker("build", "-q", "--label", LABEL, "--build-arg", f"PGSTASH_IMAGE={base}", "-t", image, SINGLE,
           timeout=1800)
    prune_dangling()
    return image


def test_single_django_on_pg17(compose_images, single_django_17, tmp_path):
    override = tmp_path / "pg17.yml"
    override.write_text(f'version: "2.4"\nservices:\n  db:\n    image: {single_django_17}\n')
    os.chmod(tmp_path, 0o755)
    os.chmod(override, 0o644)
    stack = Stack(compose_images, SINGLE, files=(str(override),), PGSTASH_PORT=free_port())
    try:
        r = stack.run_sh()
        db = stack.db()
        log = logs(db)
        assert r.returncode == 0, f"run.sh failed:\n{r.stdout}\n{r.stderr}\n--- sidecar\n{log}"
        assert "cache miss" in log and "[step django]   Applying shop.0004_product_category_price_index... OK" in log, log
        version = stack.compose("exec", "-T", "db", "psql", "-U", "postgres", "-d", "app", "-tAc",
                                "show server_version_num").stdout.strip()
        assert version.startswith("17"), version
        sql = stack.compose("exec", "-T", "db", "psql", "-U", "postgres", "-d", "app", "-tAc",
                            "select string_agg(slug, ',' order by slug) from shop_category").stdout.strip()
        assert sql == "books,games,tools"
    finally:
        stack.down()
