"""Answers with the identity the application runs as (the --user and --group tests)."""
import json
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    # ?sleep=S keeps the request in flight (the parent-death signal test).
    sleep = parse_qs(environ.get("QUERY_STRING", "")).get("sleep")
    if sleep:
        time.sleep(float(sleep[0]))
    body = json.dumps({
        "pid": os.getpid(),
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "egid": os.getegid(),
        "groups": sorted(os.getgroups()),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
