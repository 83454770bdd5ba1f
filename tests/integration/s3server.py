#!/usr/bin/env python3
"""A real S3 API on loopback for the remote-cache tests: moto's server, with
every request's SigV4 signature checked (moto lets the first
INITIAL_NO_AUTH_ACTION_COUNT calls through, which create an IAM user with an
access key and an allow-all policy; after those, a wrong signature is a 403).

Two roles in one file:

- imported by pytest (Debian's /usr/bin/python3, which need not have moto):
  `S3Server.start(port, buckets)` runs this file as a child under a python
  that has moto and talks to it over stdin/stdout; `find_python()` says
  which python that is, or None (the tests then SKIP visibly).
- run as a script (`python s3server.py --port N --bucket B ...`): serves,
  prints one JSON line {"endpoint", "access_key", "secret_key"} when ready,
  then answers one JSON request per stdin line (put, get, list, delete: the
  tests' own hands on the bucket) until stdin closes or SIGTERM.

moto comes from PyPI (`moto[server]`); where: $PGSTASH_TEST_S3_PYTHON, else
/opt/pgstash-s3/bin/python3 (a venv: `python3 -m venv /opt/pgstash-s3 &&
/opt/pgstash-s3/bin/pip install 'moto[server]'`), else the running python.
"""
import base64
import json
import os
import signal
import subprocess
import sys
import time

VENV_PYTHON = "/opt/pgstash-s3/bin/python3"
HERE = os.path.abspath(__file__)


def _has_moto(python):
    try:
        return subprocess.run([python, "-c", "import moto.server, boto3"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_python():
    """A python that can import moto.server and boto3, or None."""
    env = os.environ.get("PGSTASH_TEST_S3_PYTHON")
    candidates = [env] if env else [VENV_PYTHON, sys.executable, "/usr/bin/python3"]
    for py in candidates:
        if py and os.access(py, os.X_OK) and _has_moto(py):
            return py
    return None


class S3Server:
    """A running server (the child) and the tests' handle on its buckets."""

    def __init__(self, proc, info):
        self.proc = proc
        self.endpoint = info["endpoint"]
        self.access_key = info["access_key"]
        self.secret_key = info["secret_key"]

    @classmethod
    def start(cls, python, port, buckets, log_path, timeout=60):
        log = open(log_path, "w")
        proc = subprocess.Popen([python, HERE, "--port", str(port)] + [a for b in buckets for a in ("--bucket", b)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        line = ""
        # The child prints its JSON line when ready; readline blocks, so guard with a timer.
        import threading
        got = []
        t = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        line = got[0] if got else ""
        if not line.startswith("{"):
            cls._kill(proc)
            with open(log_path, errors="replace") as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"the S3 server did not start (port {port}): {tail}")
        return cls(proc, json.loads(line))

    def env(self):
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def _call(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ans = json.loads(self.proc.stdout.readline())
        if "error" in ans:
            raise RuntimeError(f"s3server {req.get('op')}: {ans['error']}")
        return ans

    def put(self, bucket, key, data):
        self._call(op="put", bucket=bucket, key=key, data=base64.b64encode(data).decode())

    def get(self, bucket, key):
        ans = self._call(op="get", bucket=bucket, key=key)
        return None if ans.get("missing") else base64.b64decode(ans["data"])

    def list(self, bucket, prefix=""):
        """{key: size} of the objects under prefix."""
        return self._call(op="list", bucket=bucket, prefix=prefix)["objects"]

    def delete(self, bucket, key):
        self._call(op="delete", bucket=bucket, key=key)

    @staticmethod
    def _kill(proc):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self._kill(self.proc)


# ---------------------------------------------------------------- the server

def _serve(port, buckets):
    # Read by moto when it is imported: the three IAM calls below go through unchecked.
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="pgstash-ci")
    key = iam.create_access_key(UserName="pgstash-ci")["AccessKey"]
    iam.put_user_policy(UserName="pgstash-ci", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    for b in buckets:
        s3.create_bucket(Bucket=b)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), os._exit(0)))
    print(json.dumps({"endpoint": endpoint, "access_key": key["AccessKeyId"],
                      "secret_key": key["SecretAccessKey"]}), flush=True)

    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req["op"]
            if op == "put":
                s3.put_object(Bucket=req["bucket"], Key=req["key"], Body=base64.b64decode(req["data"]))
                ans = {}
            elif op == "get":
                try:
                    body = s3.get_object(Bucket=req["bucket"], Key=req["key"])["Body"].read()
                    ans = {"data": base64.b64encode(body).decode()}
                except s3.exceptions.NoSuchKey:
                    ans = {"missing": True}
            elif op == "list":
                objs = {}
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=req["bucket"],
                                                                          Prefix=req.get("prefix", "")):
                    for o in page.get("Contents", []):
                        objs[o["Key"]] = o["Size"]
                ans = {"objects": objs}
            elif op == "delete":
                s3.delete_object(Bucket=req["bucket"], Key=req["key"])
                ans = {}
            else:
                ans = {"error": f"unknown op {op!r}"}
        except Exception as e:  # the test reads the message
            ans = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(ans), flush=True)
    server.stop()


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bucket", action="append", default=[])
    a = ap.parse_args()
    _serve(a.port, a.bucket)
