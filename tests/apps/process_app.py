"""Describes the process the application runs in (the worker-process tests)."""
import json
import os
import signal
import sys

import __main__


def app(environ, start_response):
    with open("/proc/self/maps") as maps:
        libpython = sorted({line.split()[-1] for line in maps if "libpython" in line})
    body = json.dumps({
        "pid": os.getpid(),
        "exe": os.readlink("/proc/self/exe"),
        "executable": sys.executable,
        "libpython": libpython,
        "main": sorted(name for name in vars(__main__) if not name.startswith("__")),
        "environ": sorted(name for name in os.environ if name.startswith("OSPREY_")),
        "path": sys.path,
        "argv": sys.argv,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
