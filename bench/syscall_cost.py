#!/usr/bin/env python3
"""What one syscall between two application calls costs the second call on this machine.

Calls the Flask app of bench/apps in a plain loop (as bench/overhead.py does), with nothing, one
getppid(), or one send/recv pair on a socketpair between calls, and prints the µs per call with
the syscalls' own cost (timed alone) taken out. On the 2-CPU PVM guest this project is benchmarked
on, a single getppid() made the next Flask call 4-10 µs slower: the reason the lean engine leaves
a finished response to its loop thread while more requests wait (bench/README.md).

Usage: taskset -c 0 /usr/bin/python3 bench/syscall_cost.py [--rounds N]
"""

import argparse
import io
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "apps"), HERE]

import overhead  # noqa: E402
from flask_app import app  # noqa: E402

LEFT, RIGHT = socket.socketpair()


def between(kind):
    if kind == "getppid":
        os.getppid()
    elif kind == "send+recv":
        LEFT.send(b"x")
        RIGHT.recv(1)


def per_call(kind, calls):
    template = overhead.make_environ("GET", b"")
    started = time.thread_time_ns()
    for _ in range(calls):
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = app(environ, lambda status, headers, exc_info=None: None)
        for _ in result:
            pass
        result.close()
        between(kind)
    return (time.thread_time_ns() - started) / calls / 1000


def alone(kind, calls):
    started = time.thread_time_ns()
    for _ in range(calls):
        between(kind)
    return (time.thread_time_ns() - started) / calls / 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    per_call("none", 2000)
    for _ in range(args.rounds):
        line = []
        for kind in ("none", "getppid", "send+recv"):
            syscall = alone(kind, 20000) if kind != "none" else 0.0
            line.append("%s %.1f" % (kind, per_call(kind, 5000) - syscall))
        print("Flask µs per call, syscall's own cost taken out: " + ", ".join(line))


if __name__ == "__main__":
    main()
