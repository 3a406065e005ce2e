#!/usr/bin/env python3
"""Pure-Python per-request cost of each benchmark app, measured in-process.

Builds a minimal WSGI environ, calls app(environ, start_response), consumes and
closes the returned iterable, N times in a loop, and prints microseconds per call
(CPU time of this process, so comparable with the server CPU-seconds that
bench/run.py measures). run.py subtracts this from a server's CPU per request to
estimate the server's own per-request overhead.

Usage: /usr/bin/python3 bench/overhead.py [--iterations N] [--json] [app ...]
       /usr/bin/python3 bench/overhead.py --probe APP   (run.py's machine-speed probe)

With --probe, it loads one app, then answers each line read from stdin with the µs per
call of a loop of about half a CPU-second: run.py asks it at every round, on the servers'
CPU, to see how fast the machine itself is at that moment (a shared machine has slow
spells that no server causes).
"""

import argparse
import importlib
import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(HERE, "apps")

# scenario name -> (module, attribute, method, body bytes)
APPS = {
    "hello": ("hello", "app", "GET", 0),
    "big": ("big", "app", "GET", 0),
    "echo": ("echo", "app", "POST", 10240),
    "chunks": ("chunks", "app", "GET", 0),
    "flask": ("flask_app", "app", "GET", 0),
    "django": ("django_app", "application", "GET", 0),
}


class FileWrapper:
    """Stand-in for a server's wsgi.file_wrapper (only used if an app asks for it)."""

    def __init__(self, f, blksize=8192):
        self.f, self.blksize = f, blksize

    def __iter__(self):
        while True:
            b = self.f.read(self.blksize)
            if not b:
                return
            yield b

    def close(self):
        self.f.close()


def make_environ(method, body):
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk",
        "HTTP_ACCEPT": "*/*",
        "CONTENT_TYPE": "application/octet-stream" if body else "",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }


def start_response(status, headers, exc_info=None):
    return None


def load(name):
    module, attr, method, nbody = APPS[name]
    app = getattr(importlib.import_module(module), attr)
    body = b"p" * nbody

    def one():
        env = make_environ(method, body)
        it = app(env, start_response)
        try:
            for _ in it:
                pass
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    return one


def probe(name):
    one = load(name)
    for _ in range(2000):
        one()
    print("ready", flush=True)
    for _ in sys.stdin:
        calls = 0
        t0 = time.process_time()
        while time.process_time() - t0 < 0.5:
            for _ in range(200):
                one()
            calls += 200
        print("%.3f" % ((time.process_time() - t0) / calls * 1e6), flush=True)
    return 0


def measure(name, iterations):
    one = load(name)

    for _ in range(min(iterations, 2000)):  # warm-up (imports, caches)
        one()
    best = None
    # three rounds, keep the fastest (least disturbed by the shared machine)
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(iterations):
            one()
        us = (time.process_time() - t0) / iterations * 1e6
        best = us if best is None else min(best, us)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", "-n", type=int, default=20000)
    ap.add_argument("--json", action="store_true", help="print one JSON object {app: us_per_call}")
    ap.add_argument("--probe", metavar="APP", choices=list(APPS),
                    help="answer each stdin line with one timing of APP (run.py's machine-speed probe)")
    ap.add_argument("apps", nargs="*", help="subset of: " + ", ".join(APPS))
    args = ap.parse_args(argv)
    names = args.apps or list(APPS)
    for n in names:
        if n not in APPS:
            ap.error("unknown app %r" % n)
    sys.path.insert(0, APPS_DIR)
    os.chdir(APPS_DIR)
    if args.probe:
        return probe(args.probe)
    results = {}
    for n in names:
        results[n] = round(measure(n, args.iterations), 3)
        if not args.json:
            print("%-8s %9.2f us/call  (%s)" % (n, results[n], "%s:%s" % APPS[n][:2]), flush=True)
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "iterations": args.iterations,
                          "us_per_call": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
