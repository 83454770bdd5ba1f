#!/usr/bin/python3
"""fuzz/make-seeds.py — (re)writes the seed corpora in fuzz/corpus/.

usage: fuzz/make-seeds.py SEED_ARCHIVE [REAL_META]

  SEED_ARCHIVE  build/fuzz/seed_archive (make fuzz-seeds builds it): writes a
                directory as snap_write does, for the real archive seeds.
  REAL_META     optional: a .meta that `pgstash prepare` published (make
                valgrind with KEEP=1 leaves one); its manifest and fields
                become the meta seeds' base.  Without it, the copy kept in
                fuzz/corpus/meta/real-prepare.meta is used.

config/   good and bad INI files: every section and key, continuation lines,
          long lines, CRLF, UTF-8 and invalid UTF-8, NUL bytes, comments.
meta/     metas for fuzz_meta's key and tiny archive (13 bytes, SHA-256
          below), one per compression, plus damaged variants.
archive/  snapshots of a tiny PGDATA-like tree in the three compressions,
          and hostile tars: "..", absolute paths, links leaving the
          directory, hard links, devices, fifos, oversized and truncated
          entries, a file under a symlink, duplicate names, long pax names.
"""
import gzip
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
FUZZ_KEY = "5eed" * 16
TINY_SHA = "60a1a6053583cc371927e4507278965bec2298d94f42f480bc7c04d12f8c1a6c"
TINY_BYTES = 13


def write(sub, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, sub, name), "wb") as f:
        f.write(data)


# ------------------------------------------------------------------ config

SQL_RUN = "/bin/sh -c 'for f in migrations/*.sql; do psql -X -q -v ON_ERROR_STOP=1 -f \"$f\" || exit 1; done'"

CONFIGS = {
    "sql-project.ini": "[database]\nname = app\n[step sql]\nroot = /tmp\nmigrations = migrations/*.sql\n"
                       f"run = {SQL_RUN}\n",
    "full.ini": """; every section and key
[pgstash]
cache_dir     = cache
pgdata        = /var/lib/postgresql/data
pg_bindir     = /usr/lib/postgresql/15/bin
compression   = zstd:19
max_bytes     = 1536M
max_entries   = 10
lock_timeout  = 60
step_timeout  = 0
initdb_d      = initdb.d
socket_dir    = /var/run/postgresql
docker_socket = /var/run/docker.sock

[database]
user        = postgres
name        = app
extra       = flask_app other
initdb_args = --encoding=UTF8
  --locale=C.UTF-8

[clones]
count    = 4
naming   = pattern
pattern  = {db}_w{i}
template = app

[step django]
root        = /tmp
migrations  = */migrations/*.py
  more/*.sql
exclude     = */__pycache__/*
run         = python3 manage.py migrate
  --noinput
database    = app
env         = DJANGO_SETTINGS_MODULE=proj.settings
env         = SECRET=s3cr=t
image       = python:3.12
image_id    = yes
layer       = schema
incremental = no
timeout     = 600

[step fixtures]
root       = /tmp
migrations = fixtures/*.json
run        = python3 manage.py loaddata fixtures/*.json
layer      = fixtures
incremental = yes
""",
    "clones-django.ini": "[database]\nname = app\n[clones]\ncount = 2\nnaming = django\n",
    "clones-xdist.ini": "[database]\nname = app\n[clones]\ncount = 64\nnaming = xdist\n",
    "gzip-none.ini": "[pgstash]\ncompression = gzip:9\n[database]\nname = x\n",
    "crlf.ini": "[pgstash]\r\ncache_dir = /c\r\n[database]\r\nname = app\r\n",
    "utf8.ini": "[database]\nname = caf\u00e9_\u65e5\u672c\n; \u2603 comment\n[step \u00e9]\nrun = x\n",
    "bom.ini": "\ufeff[pgstash]\ncompression = none\n",
    "invalid-utf8.ini": b"[pgstash]\ncache_dir = \xff\xfe\n[database]\nname = \xc0\xaf\n",
    "nul.ini": b"[pgstash]\ncache_dir = a\0b\n",
    "long-line.ini": "[step s]\nroot = /tmp\nmigrations = " + "a/" * 150 + "*.sql\nrun = x\n",
    "long-continuation.ini": "[step s]\nroot = /tmp\nrun = x\nmigrations = a.sql\n"
                             + "".join(f"  dir{i}/" + "m" * 150 + ".sql\n" for i in range(8)),
    "syntax-errors.ini": "[pgstash]\nthis is not ini\n[nope\nx = 1\n[]\n= value\n",
    "duplicates.ini": "[pgstash]\ncache_dir = a\ncache_dir = b\n[pgstash]\n[step s]\n[step s]\n",
    "bad-values.ini": "[pgstash]\nmax_bytes = 99999999999999999999G\nmax_entries = -1\n"
                      "lock_timeout = 12abc\ncompression = zstd:30\n[clones]\ncount = 65\nnaming = other\n"
                      "pattern = nope\n[step s]\nlayer = middle\nincremental = perhaps\nenv = 1BAD=x\n"
                      "timeout = 1e9\n",
    "outside-section.ini": "key = value\n  continued\n[database]\n  leading = blank\n",
    "comments.ini": "# hash\n; semicolon\n[pgstash] ; trailing\ncache_dir = /x ; inline\nmax_bytes = 1G # not a comment\n",
    "empty-values.ini": "[database]\nuser =\nname =\n[clones]\ncount = 1\n[step s]\nroot =\ndatabase = app\nrun =\n",
    "step-names.ini": "[step a/b]\n[step]\n[step  spaced ]\nrun = x\n[step " + "n" * 70 + "]\n",
    "empty.ini": "",
}


def config_seeds():
    for name, text in CONFIGS.items():
        write("config", name, text)
    examples = os.path.join(os.path.dirname(HERE), "examples", "pgstash.ini")
    if os.path.exists(examples):
        shutil.copy(examples, os.path.join(CORPUS, "config", "examples-pgstash.ini"))


# -------------------------------------------------------------------- meta

def meta_seeds(real_meta):
    with open(real_meta, encoding="utf-8", errors="surrogateescape") as f:
        real = f.read()
    if real_meta != os.path.join(CORPUS, "meta", "real-prepare.meta"):
        write("meta", "real-prepare.meta", real)
    # The real meta, pointed at fuzz_meta's key and tiny archive.
    base = re.sub(r"(?m)^key = .*$", f"key = {FUZZ_KEY}", real)
    base = re.sub(r"(?m)^archive_bytes = .*$", f"archive_bytes = {TINY_BYTES}", base)
    base = re.sub(r"(?m)^archive_sha256 = .*$", f"archive_sha256 = {TINY_SHA}", base)
    for comp in ("zstd", "gzip", "none"):
        write("meta", f"ok-{comp}.meta", re.sub(r"(?m)^compression = .*$", f"compression = {comp}", base))
    head = base.split("manifest = ", 1)[0]
    variants = {
        "ok-parent-fixtures.meta": head.replace("parent = \n", f"parent = {'ab' * 32}\n")
                                       .replace("layer = schema", "layer = fixtures")
                                   + "manifest = a%25b%3Bc%23d%5Ce\\\nmanifest = %20lead and trail%20\n",
        "ok-no-manifest.meta": head,
        "ok-unknown-field.meta": head + "future_field = whatever\nmanifest = x\\\n",
        "ok-escapes.meta": head + "manifest = tab%09cr%0Dnl%0Adel%7F%FF\\\nmanifest = \\\nmanifest = end\n",
        "ok-long-manifest.meta": head + "".join(f"manifest = {'x' * 119}\\\n" for _ in range(20)) + "manifest = y\n",
        "ok-big-numbers.meta": re.sub(r"(?m)^created = .*$", "created = 9223372036854775807",
                                      head).replace("build_seconds = ", "build_seconds = 1") ,
        "bad-key.meta": head.replace(f"key = {FUZZ_KEY}", "key = " + "0" * 64),
        "bad-missing-sha.meta": re.sub(r"(?m)^archive_sha256 = .*\n", "", head),
        "bad-duplicate.meta": head + "layer = schema\n",
        "bad-section.meta": "[section]\n" + head,
        "bad-escape.meta": head + "manifest = %0\n",
        "bad-nul-escape.meta": head + "manifest = a%00b\n",
        "bad-backslash.meta": head + "manifest = a\\b\n",
        "bad-size.meta": head.replace(f"archive_bytes = {TINY_BYTES}", "archive_bytes = 14"),
        "bad-created.meta": re.sub(r"(?m)^created = .*$", "created = -1", head),
        "bad-build.meta": re.sub(r"(?m)^build_seconds = .*$", "build_seconds = nan", head),
        "bad-pg-version.meta": re.sub(r"(?m)^pg_version = .*$", "pg_version = " + "9" * 40, head),
        "bad-long-line.meta": head + "manifest = " + "z" * 300 + "\n",
        "crlf.meta": base.replace("\n", "\r\n"),
    }
    for name, text in variants.items():
        write("meta", name, text)


# ----------------------------------------------------------------- archive

def tiny_tree(root):
    """A PGDATA-shaped tree: small files, empty and nested dirs, a symlink."""
    os.makedirs(os.path.join(root, "base", "1"))
    os.makedirs(os.path.join(root, "global"))
    os.makedirs(os.path.join(root, "pg_wal", "archive_status"))
    os.makedirs(os.path.join(root, "pg_stat_tmp"))
    files = {
        "PG_VERSION": b"15\n",
        "base/1/PG_VERSION": b"15\n",
        "base/1/1259": b"\0" * 1024 + b"relation" + b"\0" * 1024,
        "global/pg_control": bytes(range(256)),
        "postgresql.conf": b"listen_addresses = '*'\n",
        "postmaster.pid": b"left out by snap_write\n",
        "pg_stat_tmp/global.stat": b"left out\n",
    }
    for rel, data in files.items():
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    os.symlink("base/1", os.path.join(root, "link-inside"))
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o700)
        for n in filenames:
            os.chmod(os.path.join(dirpath, n), 0o600)


def tar_bytes(members, fmt=tarfile.PAX_FORMAT, mode="w"):
    """members: TarInfo or (TarInfo, data) pairs.  The record padding
    after the two-block trailer is cut, as snap_write does."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as t:
        for m in members:
            info, data = (m, None) if isinstance(m, tarfile.TarInfo) else m
            t.addfile(info, io.BytesIO(data) if data is not None else None)
        end = t.offset
    return buf.getvalue()[:end] + b"\0" * 1024


def ti(name, type_=tarfile.REGTYPE, size=0, linkname="", mode=0o600):
    t = tarfile.TarInfo(name)
    t.type = type_
    t.size = size
    t.linkname = linkname
    t.mode = mode
    t.mtime = 1700000000
    return t


def reg(name, data, mode=0o600):
    return ti(name, size=len(data), mode=mode), data


def patch_size(tar, name, size):
    """Sets the size field of ustar entry `name` and fixes its checksum."""
    b = bytearray(tar)
    for off in range(0, len(b), 512):
        if b[off:off + 100].rstrip(b"\0") == name.encode():
            b[off + 124:off + 136] = b"%011o\0" % size
            b[off + 148:off + 156] = b" " * 8
            b[off + 148:off + 156] = b"%06o\0 " % sum(b[off:off + 512])
            return bytes(b)
    raise ValueError(name)


def archive_seeds(seed_archive):
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "pgdata")
        tiny_tree(tree)
        for comp, suffix in (("none", "tar"), ("gzip", "tar.gz"), ("zstd", "tar.zst")):
            out = os.path.join(CORPUS, "archive", f"real-tiny.{suffix}")
            subprocess.run([seed_archive, tree, out, comp], check=True, stdout=subprocess.DEVNULL)
    pv = reg("PG_VERSION", b"15\n")
    hostile = {
        "dotdot.tar": [pv, reg("../escape", b"x")],
        "dotdot-middle.tar": [pv, ti("a", tarfile.DIRTYPE, mode=0o700), reg("a/../../escape", b"x")],
        "absolute.tar": [pv, reg("/tmp/pgstash-fuzz-absolute", b"x")],
        "symlink-absolute.tar": [pv, ti("l", tarfile.SYMTYPE, linkname="/etc")],
        "symlink-dotdot.tar": [pv, ti("l", tarfile.SYMTYPE, linkname="../..")],
        "symlink-then-file.tar": [pv, ti("l", tarfile.SYMTYPE, linkname="."), reg("l/through", b"x")],
        "symlink-chain.tar": [pv, ti("a", tarfile.SYMTYPE, linkname="b"), ti("b", tarfile.SYMTYPE, linkname="a"),
                              reg("a/x", b"x")],
        "symlink-pg-version.tar": [reg("real", b"15\n"), ti("PG_VERSION", tarfile.SYMTYPE, linkname="real")],
        "hardlink.tar": [pv, ti("h", tarfile.LNKTYPE, linkname="PG_VERSION")],
        "device.tar": [pv, ti("dev", tarfile.CHRTYPE)],
        "fifo.tar": [pv, ti("fifo", tarfile.FIFOTYPE)],
        "setuid.tar": [pv, reg("suid", b"#!/bin/sh\n", mode=0o4755), ti("d", tarfile.DIRTYPE, mode=0o000)],
        "duplicate.tar": [pv, reg("f", b"one"), ti("f", tarfile.DIRTYPE, mode=0o700), reg("f/g", b"two")],
        "dir-over-file.tar": [pv, reg("d", b"file"), ti("d", tarfile.DIRTYPE, mode=0o700)],
        "no-pg-version.tar": [reg("base", b"x")],
        "bad-pg-version.tar": [reg("PG_VERSION", b"fifteen\n")],
        "huge-pg-version.tar": [reg("PG_VERSION", b"99999999999999999999\n")],
        "empty-name.tar": [pv, reg("./", b"")],
        "long-pax-name.tar": [pv, ti("d" * 100, tarfile.DIRTYPE, mode=0o700), reg("d" * 100 + "/" + "f" * 200, b"x")],
    }
    for name, members in hostile.items():
        write("archive", name, tar_bytes(members))
    write("archive", "gnu-longname.tar", tar_bytes([pv, reg("g" * 150, b"gnu")], fmt=tarfile.GNU_FORMAT))
    write("archive", "ustar.tar", tar_bytes([pv, reg("u", b"ustar")], fmt=tarfile.USTAR_FORMAT))
    good = tar_bytes([pv, reg("base/1/1259", b"data" * 100)])
    write("archive", "truncated.tar", good[:700])
    write("archive", "truncated.tar.gz", gzip.compress(good, 9)[:-20])
    # A header whose size says more than the archive holds.
    write("archive", "size-lies.tar", patch_size(tar_bytes([pv, reg("big", b"small")], fmt=tarfile.USTAR_FORMAT),
                                                 "big", 0o7777777))
    # A gzip of 4 MB of zeros in one entry: a (mild) bomb, sparse on restore.
    write("archive", "zeros.tar.gz", gzip.compress(tar_bytes([pv, reg("zeros", b"\0" * (4 << 20))]), 9))
    write("archive", "not-an-archive", b"pgstash fuzz\n")
    write("archive", "empty", b"")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    real_meta = sys.argv[2] if len(sys.argv) == 3 else os.path.join(CORPUS, "meta", "real-prepare.meta")
    for sub in ("config", "meta", "archive"):
        os.makedirs(os.path.join(CORPUS, sub), exist_ok=True)
    config_seeds()
    meta_seeds(real_meta)
    archive_seeds(sys.argv[1])


if __name__ == "__main__":
    main()
