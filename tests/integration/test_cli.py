"""The command line and the config file: --help, --version, usage errors
(exit 2), and config errors that name the file and line (exit 2)."""
import os
import re

import pytest

from helpers import REPO, need_unprivileged

GOOD = """\
[pgstash]
cache_dir   = cache
compression = zstd
max_bytes   = 1G

[database]
name = app

[step one]
root       = repo
migrations = migrations/*.sql
run        = /bin/true
"""


@pytest.fixture()
def cfg(work):
    """Writes a small valid config and its repo; returns write(text) → path."""
    work.file("repo/migrations/0001_init.sql", "CREATE TABLE t (id int);\n")

    def write(text=GOOD, name="pgstash.ini"):
        return work.file(name, text)
    return write


def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in config")


def assert_config_error(r, path, *lines):
    """Exit 2, nothing on stdout, and stderr naming path:line for one of `lines`."""
    assert r.rc == 2, r
    assert r.stdout == "", r
    assert any(f"{path}:{n}" in r.stderr for n in lines), f"expected {path}:{'|'.join(map(str, lines))}\n{r!r}"


# ---- the front end ---------------------------------------------------------------------

def test_help(pgstash):
    r = pgstash("--help")
    assert r.rc == 0, r
    out = r.stdout.lower()
    assert "usage" in out, r
    for cmd in ("run", "prepare", "key", "ls", "verify", "prune", "healthcheck"):
        assert re.search(rf"\b{cmd}\b", out), f"--help does not mention {cmd}\n{r!r}"
    assert "--config" in out, r


@pytest.mark.parametrize("args", [("prepare", "--help"), ("key", "--explain", "-h"), ("ls", "--help"),
                                  ("verify", "--help"), ("prune", "--help"), ("healthcheck", "--help"),
                                  ("keygen", "--help")])
def test_a_commands_help_is_the_help_and_does_nothing(pgstash, work, args):
    """`pgstash ls --help` is the help, exit 0, nothing bootstrapped or written; before, most commands
    called --help an unknown argument (exit 2) and keygen wrote a key pair named ./--help.key."""
    r = pgstash(*args)
    assert r.rc == 0, r
    assert r.stdout.startswith("pgstash — "), r
    assert "Usage: pgstash" in r.stdout, r
    assert not any(n.endswith((".key", ".pub")) for n in os.listdir(work.path)), os.listdir(work.path)
    assert os.listdir(work.pgdata) == [] and os.listdir(work.cache) == [], "a command's --help bootstrapped"


def test_keygen_refuses_a_path_that_looks_like_an_option(pgstash, work):
    r = pgstash("keygen", "-x")
    assert r.rc == 2, r
    assert '"-x" looks like an option' in r.stderr and "./-x" in r.stderr, r
    assert not any(n.endswith((".key", ".pub")) for n in os.listdir(work.path)), os.listdir(work.path)
    r = pgstash("keygen", "./-x")
    assert r.rc == 0, r
    assert os.path.exists(os.path.join(work.path, "-x.key")), r


def test_readme_cli_block_is_the_help(pgstash):
    """README.md's "Command line" block is the start of --help, word for word:
    from the Usage line to the end of the options."""
    import readme
    block = readme.code_blocks("Command line")[0]
    r = pgstash("--help")
    assert r.rc == 0, r
    start = r.stdout.index("Usage:")
    end = r.stdout.index("\nConfiguration", start)
    helptext = r.stdout[start:end].rstrip("\n") + "\n"
    assert block == helptext, ("README.md's command-line block and `pgstash --help` differ; paste the help's "
                               f"Usage..Options part into the README:\n--- README\n{block}--- --help\n{helptext}")


@pytest.mark.skipif(os.path.exists("/etc/pgstash/pgstash.ini"), reason="/etc/pgstash/pgstash.ini exists here")
@pytest.mark.parametrize("cmd", ["key", "key --explain", "prepare"])
def test_no_config_file_warns_where_it_looked(work, cmd):
    """No --config, no $PGSTASH_CONFIG, no /etc/pgstash/pgstash.ini: the key
    would never change; a warning says so and names the three places."""
    r = work.run(*cmd.split(), env={"PGSTASH_CONFIG": None}, timeout=120)
    assert r.rc == 0, r
    warn = [ln for ln in r.stderr.splitlines() if "no configuration file found" in ln]
    assert warn and "warning" in warn[0], r
    for place in ("--config", "$PGSTASH_CONFIG", "/etc/pgstash/pgstash.ini"):
        assert place in warn[0], r
    if cmd == "key --explain":
        assert r.stdout.startswith("# no configuration file found"), r


def test_config_without_steps_warns(work, cfg):
    path = cfg(GOOD.split("[step one]")[0])
    r = work.run("key", config=path)
    assert r.rc == 0, r
    assert re.search(rf"warning: {re.escape(path)} has no \[step NAME\] section", r.stderr), r
    r = work.run("key", config=cfg())
    assert r.rc == 0 and "warning" not in r.stderr, r


def test_version(pgstash):
    with open(os.path.join(REPO, "VERSION")) as f:
        version = f.read().strip()
    r = pgstash("--version")
    assert r.rc == 0, r
    assert version in r.stdout, r
    assert r.stdout.endswith("\n"), r


# As the official image's docker-entrypoint.sh ends: `exec "$@"` for anything that is not a postgres
# invocation; and `_pg_want_help` (-'?'|--help|--describe-config|-V|--version) skips the set-up.

def test_other_commands_are_executed_as_the_official_entrypoint_does(pgstash, cfg, work):
    r = pgstash("sh", "-c", 'echo "out $0 $1"; echo err >&2; exit 7', "a", "b", config=cfg())
    assert r.rc == 7, r
    assert r.stdout == "out a b\n", r
    assert r.stderr == "err\n", r
    assert os.listdir(work.pgdata) == [] and os.listdir(work.cache) == [], "a shell command bootstrapped"


def test_client_programs_run_from_path(pgstash, cfg, work):
    # psql and pg_isready as `docker run IMAGE psql …` would run them (the image has the bindir on PATH).
    from helpers import PG_BINDIR
    path = f"{PG_BINDIR}:/usr/bin:/bin"
    r = pgstash("psql", "--version", config=cfg(), env={"PATH": path})
    assert r.rc == 0 and r.stdout.startswith("psql (PostgreSQL)"), r
    r = pgstash("pg_isready", "-h", work.sock, config=cfg(), env={"PATH": path})
    assert r.rc == 2 and "no response" in r.stdout, r


def test_an_unknown_command_that_is_no_program_exits_127(pgstash, cfg, work):
    r = pgstash("frobnicate", config=cfg())
    assert r.rc == 127, r
    assert "frobnicate" in r.stderr and "not a pgstash command" in r.stderr, r
    assert r.stdout == "", r
    assert os.listdir(work.pgdata) == [], "an unknown command bootstrapped"


@pytest.mark.parametrize("args", [("postgres", "--version"), ("postgres", "-V"), ("run", "--version"),
                                  ("postgres", "--describe-config"), ("postgres", "--help")])
def test_postgres_help_and_version_do_not_bootstrap(pgstash, cfg, work, args):
    r = pgstash(*args, config=cfg(), timeout=30)
    assert r.rc == 0, r
    if args[-1] in ("--version", "-V"):
        assert re.fullmatch(r"postgres \(PostgreSQL\) \d+\.\d+.*\n", r.stdout), r
    else:
        assert r.stdout, r
    assert "bootstrap" not in r.stderr, r
    assert os.listdir(work.pgdata) == [] and os.listdir(work.cache) == [], "postgres --version bootstrapped"


def test_unknown_option_is_a_usage_error(pgstash, cfg):
    # (a leading unknown "-x" means `run -x`: postgres arguments, as in the official image)
    r = pgstash("key", "--frobnicate", config=cfg())
    assert r.rc == 2, r
    assert "frobnicate" in r.stderr, r


def test_good_config_works(work, cfg):
    work.key(cfg())


def test_verbosity_flags_keep_stdout_clean(work, cfg):
    path = cfg()
    key = work.key(path)
    for flag in ("-v", "-q"):
        r = work.run(flag, "key", config=path)
        assert r.rc == 0, r
        assert r.stdout == key + "\n", r
    # logs go to stderr as "pgstash: LEVEL: ..."
    r = work.run("-v", "key", config=path)
    for line in r.stderr.splitlines():
        assert line.startswith("pgstash: "), r


# ---- where the config comes from ----------------------------------------------------------

def test_config_from_env(work, cfg):
    path = cfg()
    assert work.key(env={"PGSTASH_CONFIG": path}) == work.key(path)


def test_missing_config_file(pgstash, work):
    missing = os.path.join(work.path, "nope.ini")
    r = pgstash("key", config=missing)
    assert r.rc == 2, r
    assert missing in r.stderr, r
    r = pgstash("key", env={"PGSTASH_CONFIG": missing})
    assert r.rc == 2, r
    assert missing in r.stderr, r


def test_unreadable_config_file(pgstash, cfg):
    need_unprivileged()
    path = cfg()
    os.chmod(path, 0)
    r = pgstash("key", config=path)
    assert r.rc == 2, r
    assert path in r.stderr, r
    assert "ermission denied" in r.stderr, r


# ---- errors that name file:line -----------------------------------------------------------

def test_unknown_key(pgstash, cfg):
    text = GOOD.replace("compression = zstd\n", "compression = zstd\ncolour = blue\n")
    path = cfg(text)
    r = pgstash("key", config=path)
    assert_config_error(r, path, line_of(text, "colour"))
    assert "colour" in r.stderr, r


def test_unknown_key_in_step(pgstash, cfg):
    text = GOOD + "rnu = typo\n"
    path = cfg(text)
    r = pgstash("key", config=path)
    assert_config_error(r, path, line_of(text, "rnu"))


def test_unknown_section(pgstash, cfg):
    text = GOOD + "\n[frobnicate]\nwhat = ever\n"
    path = cfg(text)
    r = pgstash("key", config=path)
    assert_config_error(r, path, line_of(text, "[frobnicate]"), line_of(text, "what = ever"))
    assert "frobnicate" in r.stderr, r


@pytest.mark.parametrize("key,value", [
    ("max_bytes", "10X"),
    ("max_bytes", "-1G"),
    ("max_entries", "many"),
    ("lock_timeout", "15s0"),
    ("compression", "lz4"),
    ("compression", "zstd:abc"),
])
def test_bad_value(pgstash, cfg, key, value):
    text = GOOD.replace("[database]", f"{key} = {value}\n\n[database]")
    path = cfg(text)
    r = pgstash("key", config=path)
    assert_config_error(r, path, line_of(text, f"{key} = {value}"))


def test_missing_step_root(pgstash, cfg):
    text = GOOD.replace("root       = repo", "root       = no-such-dir")
    path = cfg(text)
    r = pgstash("key", config=path)
    assert_config_error(r, path, line_of(text, "no-such-dir"), line_of(text, "[step one]"))
    assert "no-such-dir" in r.stderr, r


def test_step_without_run(pgstash, cfg):
    text = GOOD.replace("run        = /bin/true\n", "")
    path = cfg(text)
    r = pgstash("key", config=path)
    assert_config_error(r, path, line_of(text, "[step one]"))
    assert "run" in r.stderr, r


def test_step_without_migrations(pgstash, cfg):
    text = GOOD.replace("migrations = migrations/*.sql\n", "")
    path = cfg(text)
    r = pgstash("key", config=path)
    assert_config_error(r, path, line_of(text, "[step one]"))


def test_every_problem_is_reported(pgstash, cfg):
    text = GOOD.replace("compression = zstd\n", "compression = zstd\ncolour = blue\n") + "rnu = typo\n"
    path = cfg(text)
    r = pgstash("key", config=path)
    assert_config_error(r, path, line_of(text, "colour"))
    assert f"{path}:{line_of(text, 'rnu')}" in r.stderr, r


def test_relative_root_is_taken_from_the_config_file_directory(work, cfg):
    path = cfg()
    # run from another directory: "root = repo" still means <config dir>/repo
    elsewhere = os.path.join(work.path, "cache")
    r = work.run("key", config=path, cwd=elsewhere)
    assert r.rc == 0, r
    assert r.stdout.strip() == work.key(path)
