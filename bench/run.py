#!/usr/bin/env python3
"""Osprey benchmark runner: Osprey vs gunicorn, uWSGI and Waitress on the same WSGI apps.

Every server runs ONE worker pinned to CPU 0; wrk runs pinned to CPU 1. For each
server x scenario x connection count it records requests/s, p50/p99 latency,
socket errors, non-2xx responses, the CPU-seconds of the server's whole process
tree during the measured run, requests per CPU-second (the headline figure),
peak RSS of the tree and the time from process start to first response.

Python standard library only. Usage:

    bash bench/setup.sh && /usr/bin/python3 bench/run.py
    /usr/bin/python3 bench/run.py --quick --servers gunicorn-sync,uwsgi --scenarios hello,flask
    /usr/bin/python3 bench/run.py --report-only bench/results/raw/<timestamp>.json

See bench/README.md for what each column means.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
APPS = os.path.join(BENCH, "apps")
RESULTS = os.path.join(BENCH, "results")
RAW = os.path.join(RESULTS, "raw")
PYTHON = "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

BIG_FILE_SIZE = 100 * 1024 * 1024
DEFAULT_BIG_FILE = os.path.join(RAW, "100mb.bin")

# ---------------------------------------------------------------------------
# Scenarios and servers
# ---------------------------------------------------------------------------

SCENARIOS = {
    # name: app spec, wrk script, connection levels, per-request wrk timeout
    "hello": {"app": "hello:app", "script": "report.lua", "conns": [64, 256], "timeout": "5s",
              "desc": "13-byte text/plain body returned as a one-element list"},
    "flask": {"app": "flask_app:app", "script": "report.lua", "conns": [64, 256], "timeout": "5s",
              "desc": "minimal Flask app, `@app.route('/')` returning 'Hello, World!'"},
    "django": {"app": "django_app:application", "script": "report.lua", "conns": [64, 256],
               "timeout": "5s",
               "desc": "minimal single-file Django app (DEBUG=False, no middleware), HttpResponse('Hello, World!')"},
    "big": {"app": "big:app", "script": "report.lua", "conns": [64, 256], "timeout": "5s",
            "desc": "80 KB (81920-byte) body as one bytes object in a list"},
    "echo": {"app": "echo:app", "script": "post.lua", "conns": [64, 256], "timeout": "5s",
             "desc": "POST with a 10 KB body, read from wsgi.input and echoed back"},
    "chunks": {"app": "chunks:app", "script": "report.lua", "conns": [64, 256], "timeout": "5s",
               "desc": "generator yielding 100 chunks of 1 KB, no Content-Length"},
    "filewrap": {"app": "filewrap:app", "script": "report.lua", "conns": [4, 16], "timeout": "30s",
                 "throughput": True,
                 "desc": "100 MiB file through wsgi.file_wrapper (64 KB blocks), Content-Length set; "
                         "FEWER CONNECTIONS (4 and 16) because every response is 100 MiB"},
}
# scenarios whose tables get the "server overhead" column (CPU per request minus app cost)
OVERHEAD_SCENARIOS = ("hello", "flask", "django")

SERVERS = {
    "gunicorn-sync": "gunicorn 1 sync worker, --backlog 2048",
    "gunicorn-gthread": "gunicorn 1 worker, -k gthread --threads 8",
    "uwsgi": "uWSGI 1 process, no threads, --http-socket, --listen 1024",
    "uwsgi-threads": "uWSGI 1 process, --threads 8 --enable-threads",
    "waitress": "Waitress, --threads=4 --connection-limit=2048",
    "osprey": "Osprey (JIT runtime, ReadyToRun build of scripts/publish.sh) -w 1 --threads 1",
    "osprey-aot": "Osprey (Native AOT build of scripts/publish.sh --aot) -w 1 --threads 1",
    "floor": "bench/floor/floor.c: one epoll thread in C, no Python, fixed body or echo (hello, big, echo only)",
    "floor-uring": "bench/floor/floor_uring.c: the floor on io_uring (one io_uring_enter a batch), hello, big, echo only",
    "c-wsgi": "bench/floor/c_wsgi.c: a C WSGI server as lean as bjoern or FastWSGI (neither is packaged by Debian): "
              "the floor's epoll loop with CPython embedded, environ from a template dict, start_response in C; "
              "every scenario but filewrap",
}
# C servers: source, extra compiler arguments (a function: they may need a command's output); built by
# run.py when selected. c-wsgi embeds the interpreter the other servers run (PYTHON + "-config").
FLOORS = {"floor": ("floor.c", lambda: []), "floor-uring": ("floor_uring.c", lambda: ["-luring"]),
          "c-wsgi": ("c_wsgi.c", lambda: python_embed_flags())}
# The floor server's body size per scenario (0 = echo the request body); other scenarios need Python.
FLOOR_BODY = {"hello": 13, "big": 81920, "echo": 0}
BASELINES = (("gunicorn-sync", "vs gunicorn sync"), ("uwsgi", "vs uWSGI"))


def python_embed_flags():
    config = PYTHON + "-config"
    if not os.access(config, os.X_OK):
        raise Skip("%s not found (Debian's python3-dev)" % config)
    flags = subprocess.run([config, "--cflags", "--ldflags", "--embed"], capture_output=True, text=True)
    if flags.returncode != 0:
        raise Skip("%s --embed failed" % config)
    return flags.stdout.split()


def somaxconn():
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 128


def server_command(name, app, port, ctx):
    """argv (without taskset) and cwd for a server, or raise Skip."""
    bind = "127.0.0.1:%d" % port
    maxq = somaxconn()
    if name in ("gunicorn-sync", "gunicorn-gthread"):
        exe = shutil.which("gunicorn") or "/usr/bin/gunicorn"
        cmd = [exe, "-w", "1", "-b", bind, "--chdir", APPS, "--backlog", str(min(2048, maxq))]
        if name == "gunicorn-gthread":
            cmd += ["-k", "gthread", "--threads", "8"]
        return cmd + [app], APPS
    if name in ("uwsgi", "uwsgi-threads"):
        exe = shutil.which("uwsgi") or "/usr/bin/uwsgi"
        cmd = [exe, "--plugin", "python3", "--http-socket", bind, "--chdir", APPS,
               "--module", app, "--processes", "1", "--listen", str(min(1024, maxq)),
               "--disable-logging", "--need-app", "--die-on-term"]
        if name == "uwsgi-threads":
            cmd += ["--threads", "8", "--enable-threads"]
        return cmd, APPS
    if name == "waitress":
        # Waitress stops accepting at 100 open connections by default; the extra wrk
        # connections would then sit unanswered in the accept queue and wrk (4.1) would
        # not count them as errors. Raise the limit like the other servers' backlogs.
        return [PYTHON, "-m", "waitress", "--threads=4", "--listen=" + bind,
                "--connection-limit=%d" % min(2048, maxq), app], APPS
    if name == "c-wsgi":
        if ctx["scenario"] == "filewrap":
            raise Skip("c-wsgi offers no wsgi.file_wrapper")
        binary = ctx["floor_bins"].get(name)
        if not binary:
            raise Skip(ctx["floor_notes"].get(name, "not built"))
        return [binary, str(port), app], APPS
    if name in FLOORS:
        scenario = ctx["scenario"]
        if scenario not in FLOOR_BODY:
            raise Skip("the floor answers only " + ", ".join(FLOOR_BODY))
        binary = ctx["floor_bins"].get(name)
        if not binary:
            raise Skip(ctx["floor_notes"].get(name, "not built"))
        return [binary, str(port), str(FLOOR_BODY[scenario])], APPS
    if name in ("osprey", "osprey-aot"):
        binary = ctx["osprey_bins"].get(name)
        if not binary:
            raise Skip(ctx["osprey_notes"].get(name, "no binary"))
        return [binary, "-w", "1", "-b", bind, "--python", PYTHON, "--chdir", APPS,
                "--threads", str(ctx["osprey_threads"]), app], APPS
    raise ValueError(name)


class Skip(Exception):
    pass


class MachineProbe:
    """bench/overhead.py --probe on the servers' CPU: the Flask app called in a plain Python loop,
    timed before every round. No server takes part, so it shows how fast the shared machine
    itself was when that round ran."""

    def __init__(self, cpu, log):
        self.proc = None
        try:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), PYTHON, os.path.join(BENCH, "overhead.py"), "--probe", "flask"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                universal_newlines=True, env=server_env())
            if self.proc.stdout.readline().strip() != "ready":
                raise OSError("it did not start (is python3-flask installed?)")
        except OSError as exc:
            log("machine probe unavailable: %s" % exc)
            self.close()

    def sample(self):
        """µs per call of the plain loop now, or None."""
        if self.proc is None:
            return None
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            return float(self.proc.stdout.readline())
        except (OSError, ValueError):
            self.close()
            return None

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# ---------------------------------------------------------------------------
# /proc helpers: process tree, CPU ticks, RSS
# ---------------------------------------------------------------------------

def _read_stat(pid):
    """(ppid, utime+stime+cutime+cstime ticks) or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    # rest[0]=state rest[1]=ppid ... rest[11]=utime rest[12]=stime rest[13]=cutime rest[14]=cstime
    try:
        return int(rest[1]), int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    except (IndexError, ValueError):
        return None


def tree_pids(root):
    """root and all its descendants (by a scan of /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _read_stat(int(d))
            if st is not None:
                parent[int(d)] = st[0]
    children = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        if p in parent or p == root:
            out.append(p)
        stack.extend(children.get(p, ()))
    return out


def tree_cpu_ticks(root):
    """Sum of utime+stime (plus reaped children's cutime+cstime) over the tree."""
    total = 0
    for pid in tree_pids(root):
        st = _read_stat(pid)
        if st is not None:
            total += st[1]
    return total


def rss_kb(pid):
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * PAGE_KB  # resident pages == VmRSS
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss_kb(root):
    return sum(rss_kb(pid) for pid in tree_pids(root))


def worker_rss_kb(root):
    """VmRSS of the process that serves: the largest child of a master, or the root itself when
    it has no children (uWSGI without --master, Waitress, the floors). The issue's memory target
    is per worker, and a tree sum counts the master and every page the two share twice."""
    children = [pid for pid in tree_pids(root) if pid != root]
    return max((rss_kb(pid) for pid in children), default=0) or rss_kb(root)


class RssSampler(threading.Thread):
    """Samples the tree's summed VmRSS every 100 ms while a window is open; a window reports its
    max. Between windows it sleeps: the servers of a scenario are up together, and the samplers of
    the idle ones would only add load to the client's CPU, where the runner runs."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root = root
        self.stop_event = threading.Event()
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.window_max = 0

    def run(self):
        while not self.stop_event.is_set():
            if self.open.wait(0.5) and not self.stop_event.is_set():
                kb = tree_rss_kb(self.root)
                with self.lock:
                    self.window_max = max(self.window_max, kb)
                self.stop_event.wait(0.1)

    def start_window(self):
        with self.lock:
            self.window_max = tree_rss_kb(self.root)
        self.open.set()

    def end_window(self):
        self.open.clear()
        kb = tree_rss_kb(self.root)
        with self.lock:
            return max(self.window_max, kb)

    def stop(self):
        self.stop_event.set()


# ---------------------------------------------------------------------------
# Server lifecycle
# ---------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def probe(port, timeout=1.0):
    """HTTP status code of GET / or None. Reads only the status line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            buf = b""
            while b"\r\n" not in buf and len(buf) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            m = re.match(rb"HTTP/\d\.\d (\d{3})", buf)
            return int(m.group(1)) if m else None
    except OSError:
        return None


def server_env():
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(k, None)
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:" + env.get("PATH", "")
    env["BENCH_FILE"] = DEFAULT_BIG_FILE
    return env


class Server:
    def __init__(self, name, argv, cwd, log_path, cpu):
        self.name, self.argv, self.cwd, self.log_path, self.cpu = name, argv, cwd, log_path, cpu
        self.proc = None
        self.sampler = None
        self.startup_ms = None

    def start(self, port, timeout):
        self.log = open(self.log_path, "wb")
        full = ["taskset", "-c", str(self.cpu)] + self.argv
        self.log.write(("$ cd %s && %s\n" % (self.cwd, " ".join(full))).encode())
        self.log.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(full, cwd=self.cwd, env=server_env(), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.sampler = RssSampler(self.proc.pid)
        self.sampler.start()
        last = None
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise Skip("exited with code %s before answering; log: %s"
                           % (self.proc.returncode, self.log_tail()))
            code = probe(port)
            if code is not None and 200 <= code < 300:
                self.startup_ms = (time.monotonic() - t0) * 1000.0
                return self.startup_ms
            last = code if code is not None else last
            time.sleep(0.01)
        raise Skip("no 2xx answer within %.0f s (last status: %s); log: %s"
                   % (timeout, last, self.log_tail()))

    def exit_status(self):
        rc = self.proc.poll() if self.proc is not None else None
        if rc is None:
            return "still running"
        return "killed by signal %d" % -rc if rc < 0 else "exit code %d" % rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=400):
        try:
            self.log.flush()
            with open(self.log_path, "rb") as f:
                data = f.read()
            text = data.decode("utf-8", "replace").strip().splitlines()
            text = [line for line in text if not line.startswith("$ ")]  # our command line
            tail = " | ".join(line.strip() for line in text[-6:])
            return tail[-n:] if tail else "(empty)"
        except OSError:
            return "(no log)"

    def stop(self):
        if self.sampler:
            self.sampler.stop()
        if self.proc is None:
            return
        pids = tree_pids(self.proc.pid) if self.proc.poll() is None else []
        sig = signal.SIGINT if self.name.startswith("uwsgi") else signal.SIGTERM
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:  # descendants that may have left the process group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        try:
            self.log.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------

def run_wrk(port, scenario, conns, duration, cpu):
    sc = SCENARIOS[scenario]
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", "-c%d" % conns, "-d%ds" % duration,
           "--timeout", sc["timeout"], "--latency", "-s", os.path.join(BENCH, sc["script"]),
           "http://127.0.0.1:%d/" % port]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=duration + 60, start_new_session=True)
    except subprocess.TimeoutExpired:
        return None, "wrk did not finish in time"
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = p.stdout.decode("utf-8", "replace")
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            w = json.loads(line[len("WRK_JSON "):])
            w["client_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            return w, out
    return None, "wrk produced no report (rc %d): %s" % (
        p.returncode, (out + p.stderr.decode("utf-8", "replace")).strip()[-300:])


def measured_run(server, port, scenario, conns, duration, client_cpu, app_us):
    sampler = server.sampler
    sampler.start_window()
    c0 = tree_cpu_ticks(server.proc.pid)
    w, raw_out = run_wrk(port, scenario, conns, duration, client_cpu)
    c1 = tree_cpu_ticks(server.proc.pid) if server.alive() else None
    rss_kb = sampler.end_window()
    worker_kb = worker_rss_kb(server.proc.pid)
    if w is None:
        return {"error": raw_out, "server_alive": server.alive()}
    cpu_s = None if c1 is None else (c1 - c0) / CLK_TCK
    dur_s = w["duration_us"] / 1e6
    e = w["errors"]
    run = {
        "requests": w["requests"],
        "duration_s": round(dur_s, 3),
        "rps": w["requests"] / dur_s if dur_s else 0.0,
        "bytes": w["bytes"],
        "gbps": w["bytes"] / dur_s / 1e9 if dur_s else 0.0,
        "p50_us": w["latency_us"]["p50"],
        "p90_us": w["latency_us"]["p90"],
        "p99_us": w["latency_us"]["p99"],
        "mean_us": w["latency_us"]["mean"],
        "max_us": w["latency_us"]["max"],
        "errors": e,
        "socket_errors": e["connect"] + e["read"] + e["write"] + e["timeout"],
        "non2xx": e["status"],
        "cpu_s": cpu_s,
        "req_per_cpu_s": (w["requests"] / cpu_s) if cpu_s else None,
        "cpu_us_per_req": (cpu_s * 1e6 / w["requests"]) if cpu_s and w["requests"] else None,
        "peak_rss_mb": rss_kb / 1024.0,
        "worker_rss_mb": worker_kb / 1024.0,
        "client_cpu_s": w["client_cpu_s"],
        "client_cpu_pct": w["client_cpu_s"] / dur_s * 100.0 if dur_s else 0.0,
        "server_alive": server.alive(),
    }
    if app_us is not None and run["cpu_us_per_req"] is not None:
        run["server_overhead_us"] = run["cpu_us_per_req"] - app_us
    return run


def spread_pct(rpss):
    """(max - min) / mean of the given figures (the runs' req/CPU-s, or GB/s), in percent."""
    if not rpss:
        return 0.0
    mean = sum(rpss) / len(rpss)
    return (max(rpss) - min(rpss)) / mean * 100.0 if mean else 0.0


def settle(server, max_wait=5.0):
    """Wait (up to max_wait s) until the server tree uses < 5% of a core, so work left
    over from the previous run (e.g. responses still being written to closed
    connections) does not leak into the next measurement."""
    t_end = time.monotonic() + max_wait
    while time.monotonic() < t_end and server.alive():
        c0 = tree_cpu_ticks(server.proc.pid)
        time.sleep(0.25)
        if (tree_cpu_ticks(server.proc.pid) - c0) / CLK_TCK < 0.25 * 0.05:
            return


def agree(a, b, tol):
    hi = max(a, b)
    return hi == 0 or abs(a - b) / hi <= tol


def runs_agree(a, b, tol):
    """Two wrk runs agree when their req/s and their req/CPU-s (the headline) both do: a server's
    CPU use can move between runs of equal throughput (uWSGI's does, by a third)."""
    if not agree(a["rps"], b["rps"], tol):
        return False
    ca, cb = a.get("req_per_cpu_s"), b.get("req_per_cpu_s")
    return ca is None or cb is None or agree(ca, cb, tol)


def headline(run):
    return run.get("req_per_cpu_s") or 0.0


def next_run(server, port, scenario, conns, args, client_cpu, app_us, log, runs):
    """One measured run of a row, appended to runs. True when the row is done: the run failed,
    or the row's two best runs now agree (converged_runs)."""
    settle(server)
    r = measured_run(server, port, scenario, conns, args.duration, client_cpu, app_us)
    if "error" not in r and not r["server_alive"]:
        r["error"] = "server died during the run (%s); log: %s" % (
            server.exit_status(), server.log_tail())
    runs.append(r)
    label = "%-16s run %d" % (server.name, len(runs))
    if "error" in r:
        log("    %s: ERROR %s" % (label, r["error"]))
        return True
    log("    %s: %9.0f req/s  p50 %s  p99 %s  cpu %5.2fs  %8s req/CPU-s  err %d/%d  rss %.0f MB  wrk %.0f%%"
        % (label, r["rps"], fmt_lat(r["p50_us"]), fmt_lat(r["p99_us"]), r["cpu_s"] or 0,
           fmt_num(r["req_per_cpu_s"]), r["socket_errors"], r["non2xx"], r["peak_rss_mb"],
           r["client_cpu_pct"]))
    return converged_runs(runs, args)


def best_two(items, key):
    """The two items with the highest key, best first (None when there are fewer than two)."""
    ranked = sorted(items, key=key, reverse=True)
    return ranked[:2] if len(ranked) >= 2 else None


def reported(good, key, converged):
    """The figure a row reports: its best run when it converged, else its median run (the lower
    one for an even count)."""
    ranked = sorted(good, key=key)
    return ranked[-1] if converged else ranked[(len(ranked) - 1) // 2]


def converged_runs(runs, args):
    """A row is done when its two best runs agree. The machine is shared: a slow spell (a pure-
    Python loop on an idle machine slows by up to a third for half a minute, see bench/README.md)
    only ever slows a run down, so the best runs are the least disturbed, and a disturbed run
    costs one more run instead of becoming the row's figure."""
    if not runs or "error" in runs[-1]:
        return False
    top = best_two([r for r in runs if "error" not in r], headline)
    return top is not None and runs_agree(top[0], top[1], args.tolerance)


def make_row(server, scenario, conns, runs, converged):
    good = [r for r in runs if "error" not in r]
    row = {"server": server.name, "scenario": scenario, "connections": conns,
           "startup_ms": server.startup_ms, "runs": runs, "converged": converged}
    if not good:
        row["status"] = "failed"
        row["note"] = runs[-1].get("error", "no run") if runs else "no run"
        return row
    rep = reported(good, headline, converged)
    row.update({
        "status": "ok",
        "reported": dict(rep),
        "spread_pct": spread_pct([headline(r) for r in good]),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
        "worker_rss_mb": max(r.get("worker_rss_mb", 0.0) for r in good),
    })
    if "error" in runs[-1]:
        row["note"] = "run %d failed, reported from the earlier run(s): %s" % (len(runs), runs[-1]["error"])
    return row


def probe_round(probe, data, log, what, **where):
    """Times the machine before a round of runs: logged, kept in the raw data (with `where`), returned."""
    us = probe.sample()
    if us is not None:
        log("  %s: machine probe %.1f us per plain-loop Flask call" % (what, us))
        data["probes"].append(dict(where, us=us, time=round(time.time(), 1)))
    return us


def in_rounds(up, max_runs, start_round, step):
    """Measures the servers of `up` in rounds, one step of each in turn, so that a slow spell of the
    shared machine falls on every server alike. Each round begins with start_round(n) (n from 1), whose
    result goes to that round's steps: step(server, port, it) returns True once the server is done.
    Stops when every server is done (a server that died is) or after max_runs rounds."""
    done = {srv.name: False for srv, _ in up}
    for rnd in range(1, max_runs + 1):
        if all(done.values()):
            break
        started = start_round(rnd)
        for srv, port in up:
            if done[srv.name]:
                continue
            if not srv.alive():
                done[srv.name] = True
                continue
            done[srv.name] = step(srv, port, started)


def measure_pull(server, port, duration, client_cpu, pull_bin):
    """The throughput scenario again with bench/client/pull.c, which reads in 1 MiB blocks,
    so that the server, not wrk, sets the pace: GB/s and the server's CPU-seconds per GB."""
    settle(server)
    c0 = tree_cpu_ticks(server.proc.pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        p = subprocess.run(["taskset", "-c", str(client_cpu), pull_bin, str(port), str(duration)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        return {"error": "pull did not finish in time"}
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (tree_cpu_ticks(server.proc.pid) - c0) / CLK_TCK if server.alive() else None
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("PULL_JSON "):
            r = json.loads(line[len("PULL_JSON "):])
            gb = r["bytes"] / 1e9
            return {
                "responses": r["responses"],
                "gbps": gb / r["seconds"] if r["seconds"] else 0.0,
                "cpu_s": cpu_s,
                "cpu_s_per_gb": cpu_s / gb if cpu_s is not None and gb else None,
                "server_cpu_pct": cpu_s / r["seconds"] * 100.0 if cpu_s is not None and r["seconds"] else None,
                "client_cpu_pct": ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime))
                                  / r["seconds"] * 100.0 if r["seconds"] else None,
            }
    return {"error": "pull failed (rc %d): %s" % (p.returncode, p.stderr.decode("utf-8", "replace").strip()[-200:])}


# ---------------------------------------------------------------------------
# Preparation: big file, overhead, Osprey builds, environment facts
# ---------------------------------------------------------------------------

def ensure_big_file(path, log):
    if os.path.exists(path) and os.path.getsize(path) == BIG_FILE_SIZE:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log("creating %s (100 MiB)" % path)
    block = bytes(range(256)) * 4096  # 1 MiB, not sparse, not all zeros
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for _ in range(BIG_FILE_SIZE // len(block)):
            f.write(block)
    os.replace(tmp, path)


def app_overhead(names, log):
    try:
        p = subprocess.run([PYTHON, os.path.join(BENCH, "overhead.py"), "--json", "-n", "10000"]
                           + list(names),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                           env=server_env())
        data = json.loads(p.stdout.decode().strip().splitlines()[-1])
        log("in-process app cost (us/call): %s" % data["us_per_call"])
        return data["us_per_call"]
    except Exception as exc:  # noqa: BLE001
        log("overhead.py failed: %s" % exc)
        return {}


def default_binary(kind):
    return os.path.join(ROOT, "artifacts", "osprey" if kind == "jit" else "aot", "osprey")


def build_osprey(kind, log_dir, log):
    """Returns (binary or None, note)."""
    csproj = os.path.join(ROOT, "src", "Osprey", "Osprey.csproj")
    if not shutil.which("dotnet"):
        return None, "dotnet not found; pass --osprey PATH"
    # The same commands as scripts/publish.sh: the binaries a user deploys.
    if kind == "jit":
        cmds = [["dotnet", "publish", "-c", "Release", "-r", "linux-x64", "--self-contained", "false",
                 "-p:PublishReadyToRun=true", csproj, "-o", os.path.join(ROOT, "artifacts", "osprey"), "-nologo"]]
    else:
        aot = ["dotnet", "publish", "-c", "Release", "-r", "linux-x64", "-p:PublishAot=true",
               csproj, "-o", os.path.join(ROOT, "artifacts", "aot"), "-nologo"]
        # osprey.so beside the executable: workers load it from inside the interpreter.
        cmds = [aot, aot + ["-p:NativeLib=Shared", "-p:OutputType=Library",
                            "-p:IntermediateOutputPath=obj/Release/native-lib/", "-p:OutDir=bin/Release/native-lib/"]]
    binary = default_binary(kind)
    log_path = os.path.join(log_dir, "build-osprey-%s.log" % kind)
    rc = 0
    with open(log_path, "wb") as lf:
        for cmd in cmds:
            log("building Osprey (%s): %s" % (kind, " ".join(cmd)))
            try:
                rc = subprocess.run(cmd, cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT, timeout=1200,
                                    stdin=subprocess.DEVNULL).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if rc != 0:
                break
    if rc != 0 or not os.access(binary, os.X_OK):
        tail = ""
        try:
            with open(log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace").splitlines()
            errs = [l for l in text if re.search(r"\berror\b [A-Z]*\d*:?", l)]
            errs = errs or [l for l in text if "error" in l.lower()]
            tail = (errs[0].strip() if errs else "")[:300]
        except OSError:
            pass
        return None, "%s build failed (rc %s): %s (log: %s)" % (
            kind.upper(), rc, tail or "no error line", os.path.relpath(log_path, ROOT))
    return binary, "built %s" % os.path.relpath(binary, ROOT)


def describe_binary(path):
    try:
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path)).astimezone()
        return "%s (modified %s)" % (path, mtime.isoformat(timespec="seconds"))
    except OSError:
        return path


def cmd_out(cmd):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        return p.stdout.decode("utf-8", "replace").strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


def machine_facts():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    pkg = ("import importlib.metadata as m, json; "
           "print(json.dumps({k: m.version(k) for k in ('waitress','flask','django')}))")
    try:
        pyver = json.loads(cmd_out([PYTHON, "-c", pkg]))
    except Exception:  # noqa: BLE001
        pyver = {}
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": cmd_out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": cmd_out([PYTHON, "--version"]),
        "somaxconn": somaxconn(),
        "versions": {
            "gunicorn": cmd_out(["gunicorn", "--version"]),
            "uwsgi": cmd_out(["uwsgi", "--version"]),
            "wrk": cmd_out(["wrk", "-v"]).split("[")[0].strip(),
            **pyver,
        },
    }


# ---------------------------------------------------------------------------
# Formatting and the Markdown summary
# ---------------------------------------------------------------------------

def fmt_lat(us):
    if us is None:
        return "–"
    if us >= 1000:
        return "%.2f ms" % (us / 1000.0) if us < 100000 else "%.0f ms" % (us / 1000.0)
    return "%d µs" % us


def fmt_num(x, digits=0):
    if x is None:
        return "–"
    return ("{:,.%df}" % digits).format(x)


def fmt_err(run):
    n = run["socket_errors"]
    if not n:
        return "0"
    e = run["errors"]
    parts = ["%s %d" % (k, e[k]) for k in ("connect", "read", "write", "timeout") if e[k]]
    return "%d (%s)" % (n, ", ".join(parts))


def write_summary(data, path):
    meta = data["meta"]
    rows = [r for r in data["rows"]]
    lines = []
    lines.append("# Osprey benchmark results")
    lines.append("")
    lines.append("- Date: %s" % meta["date"])
    lines.append("- Machine: %s CPUs (`nproc`), %s, Linux %s"
                 % (meta["nproc"], meta["cpu_model"], meta["kernel"]))
    lines.append("- Python: %s (`%s`)%s" % (
        meta["python"], PYTHON,
        "; repository at commit %s" % meta["git_commit"] if meta.get("git_commit") else ""))
    v = meta["versions"]
    lines.append("- Peers: gunicorn %s; uWSGI %s; Waitress %s; Flask %s; Django %s; %s"
                 % (v.get("gunicorn", "?").replace("gunicorn (version ", "").rstrip(")"),
                    v.get("uwsgi", "?"), v.get("waitress", "?"), v.get("flask", "?"),
                    v.get("django", "?"), v.get("wrk", "wrk")))
    o = meta.get("options", {})
    best = o.get("convergence") == "best-two"
    lines.append("- Mode: %s; %s s per measured run, %s s warm-up; up to %s runs per row until %s "
                 "agree within %d%% on req/s and on req/CPU-s%s%s; net.core.somaxconn=%s"
                 % ("QUICK (smoke test, not for publishing)" if o.get("quick") else "full",
                    o.get("duration"), o.get("warmup"), o.get("max_runs"),
                    "the two best runs" if best else "two consecutive runs",
                    round(o.get("tolerance", 0.1) * 100),
                    ", then the best is reported (a run of a shared machine is only ever slowed down)"
                    if best else "",
                    "; the servers of a scenario run in turn, one run each per round"
                    if o.get("interleaved") else "",
                    meta.get("somaxconn")))
    lines.append("- Setup: each server runs one worker process pinned to CPU 0 (`taskset -c 0`); "
                 "wrk runs pinned to CPU 1 (`taskset -c 1 wrk -t1 -cC -dD --latency`). "
                 "The machine is shared, so absolute numbers wobble; compare within one run.")
    lines.append("- Servers: " + "; ".join("**%s**: %s" % (k, SERVERS[k]) for k in meta["servers"]))
    probes = sorted(p["us"] for p in data.get("probes", []))
    if probes:
        lines.append("- Machine speed: the Flask app in a plain Python loop on CPU 0 (`bench/overhead.py "
                     "--probe flask`, before every round) took %.1f to %.1f µs per call, median %.1f, "
                     "over %d rounds: the spread of the machine itself, with no server involved"
                     % (probes[0], probes[-1], probes[len(probes) // 2], len(probes)))
    ov = meta.get("app_us") or {}
    if ov:
        lines.append("- In-process app cost (bench/overhead.py, µs/call): "
                     + ", ".join("%s %.2f" % (k, ov[k]) for k in ov))
    for n in meta.get("notes", []):
        lines.append("- Note: %s" % n)
    lines.append("")
    lines.append("Headline column: **req/CPU-s** = requests served per CPU-second used by the "
                 "server's whole process tree (higher is better). Ratios compare it with gunicorn "
                 "sync and uWSGI (no threads) at the same connection count. See bench/README.md.")
    lines.append("")

    for sc in meta["scenarios"]:
        srows = [r for r in rows if r["scenario"] == sc]
        if not srows:
            continue
        spec = SCENARIOS[sc]
        thr = spec.get("throughput", False)
        ovh = sc in OVERHEAD_SCENARIOS
        lines.append("## %s — `%s`" % (sc, spec["app"]))
        lines.append("")
        lines.append(spec["desc"] + ".")
        lines.append("")
        head = ["server", "conns", "req/s"]
        if thr:
            head.append("GB/s")
        head += ["p50", "p99", "socket errors", "non-2xx", "CPU-s", "req/CPU-s"]
        head += [b[1] for b in BASELINES]
        if ovh:
            head.append("server overhead µs/req")
        head += ["peak RSS MB", "worker RSS MB", "start→first ms", "wrk CPU %", "runs"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|")
        base = {}
        for r in srows:
            if r["status"] == "ok" and r["reported"].get("req_per_cpu_s"):
                base[(r["server"], r["connections"])] = r["reported"]["req_per_cpu_s"]
        notes = []
        conns_order = sorted({r["connections"] for r in srows})
        srv_order = [s for s in meta["servers"]]
        for c in conns_order:
            for s in srv_order:
                for r in srows:
                    if r["server"] != s or r["connections"] != c:
                        continue
                    if r["status"] != "ok":
                        cells = [s, str(c)] + ["–"] * (len(head) - 3) + ["failed"]
                        lines.append("| " + " | ".join(cells) + " |")
                        notes.append("%s @%d: %s" % (s, c, r.get("note", "")))
                        continue
                    rep = r["reported"]
                    if not rep["socket_errors"] and not rep["non2xx"]:
                        # The reported run is the best one: errors of the others must not vanish with it.
                        erring = ["run %d: %s socket, %d non-2xx" % (i + 1, fmt_err(run), run["non2xx"])
                                  for i, run in enumerate(r["runs"])
                                  if "error" not in run and (run["socket_errors"] or run["non2xx"])]
                        if erring:
                            notes.append("%s @%d: the reported run had no errors; %s"
                                         % (s, c, "; ".join(erring)))
                    cells = [s, str(c), fmt_num(rep["rps"])]
                    if thr:
                        cells.append("%.2f" % rep["gbps"])
                    lat = (lambda us: fmt_lat(us) if rep["requests"] else "–")
                    cells += [lat(rep["p50_us"]), lat(rep["p99_us"]), fmt_err(rep),
                              str(rep["non2xx"]),
                              "%.2f" % rep["cpu_s"] if rep["cpu_s"] is not None else "–",
                              "**%s**" % fmt_num(rep["req_per_cpu_s"])]
                    for bname, _ in BASELINES:
                        b = base.get((bname, c))
                        cells.append("%.2f×" % (rep["req_per_cpu_s"] / b)
                                     if b and rep.get("req_per_cpu_s") else "–")
                    if ovh:
                        so = rep.get("server_overhead_us")
                        cells.append("%.1f" % so if so is not None else "–")
                    cells.append("%.1f" % r["peak_rss_mb"])
                    cells.append("%.1f" % r["worker_rss_mb"] if r.get("worker_rss_mb") else "–")
                    cells.append("%.0f" % r["startup_ms"] if r.get("startup_ms") else "–")
                    cells.append("%.0f" % rep["client_cpu_pct"] if "client_cpu_pct" in rep else "–")
                    nruns = len([x for x in r["runs"] if "error" not in x])
                    if r["converged"] or nruns == 1:
                        cells.append("%d" % nruns)
                    else:
                        cells.append("%d, spread %.0f%%" % (
                            nruns, spread_pct([headline(x) for x in r["runs"] if "error" not in x])))
                    lines.append("| " + " | ".join(cells) + " |")
                    if r.get("note"):
                        notes.append("%s @%d: %s" % (s, c, r["note"]))
        pulls = [x for x in data.get("pull", []) if x["scenario"] == sc]
        if pulls:
            lines.append("")
            lines.append("The same app read by `bench/client/pull.c` (one connection, 1 MiB reads), so "
                         "that the server, not wrk, sets the pace:")
            lines.append("")
            lines.append("| server | GB/s | server CPU % | server CPU-s per GB | client CPU % | runs |")
            lines.append("|---|--:|--:|--:|--:|--:|")
            for x in pulls:
                if "error" in x:
                    lines.append("| %s | failed | – | – | – | – |" % x["server"])
                    notes.append("%s pull: %s" % (x["server"], x["error"]))
                    continue
                lines.append("| %s | **%.2f** | %s | %s | %s | %s |" % (
                    x["server"], x["gbps"],
                    "%.0f" % x["server_cpu_pct"] if x["server_cpu_pct"] is not None else "–",
                    "%.2f" % x["cpu_s_per_gb"] if x["cpu_s_per_gb"] is not None else "–",
                    "%.0f" % x["client_cpu_pct"] if x["client_cpu_pct"] is not None else "–",
                    "%d" % x["runs"] if x["converged"] or x["runs"] < 2
                    else "%d, spread %.0f%%" % (x["runs"], x["spread_pct"])))
        for sk in data.get("skipped", []):
            if sk["scenario"] == sc:
                notes.append("%s: skipped — %s" % (sk["server"], sk["reason"]))
        if notes:
            lines.append("")
            for n in notes:
                lines.append("- " + n.replace("|", "\\|"))
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_list(value, allowed, what):
    items = [x.strip() for x in value.split(",") if x.strip()]
    for x in items:
        if x not in allowed:
            raise SystemExit("unknown %s %r (choose from: %s)" % (what, x, ", ".join(allowed)))
    return [x for x in allowed if x in items]  # canonical order


def main(argv=None):
    ap = argparse.ArgumentParser(description="Osprey vs gunicorn/uWSGI/Waitress benchmark")
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma list (default all): " + ", ".join(SERVERS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma list (default all): " + ", ".join(SCENARIOS))
    ap.add_argument("--duration", type=int, default=None, help="seconds per measured run (default 10, quick 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up seconds (default 2, quick 1)")
    ap.add_argument("--max-runs", type=int, default=None, help="max runs per row (default 4, quick 2)")
    ap.add_argument("--tolerance", type=float, default=0.10, help="agreement between consecutive runs (default 0.10)")
    ap.add_argument("--connections", default=None,
                    help="override connection levels for every scenario, e.g. 64,256")
    ap.add_argument("--quick", action="store_true", help="smoke test: 3 s runs, 1 s warm-up, max 2 runs")
    ap.add_argument("--osprey", metavar="PATH",
                    help="Osprey binary (default: scripts/publish.sh's ReadyToRun build, to artifacts/osprey)")
    ap.add_argument("--osprey-aot", metavar="PATH",
                    help="NativeAOT Osprey binary (default: dotnet publish -p:PublishAot=true to artifacts/aot)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not build Osprey; use --osprey/--osprey-aot or existing default outputs")
    ap.add_argument("--osprey-threads", type=int, default=1, help="Osprey --threads (default 1)")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for a server to answer")
    ap.add_argument("--summary", default=os.path.join(RESULTS, "summary.md"), help="Markdown output")
    ap.add_argument("--report-only", metavar="RAW_JSON", help="only regenerate the summary from a raw JSON file")
    args = ap.parse_args(argv)

    if args.report_only:
        with open(args.report_only) as f:
            write_summary(json.load(f), args.summary)
        print("wrote %s" % args.summary)
        return 0

    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.max_runs is None:
        args.max_runs = 2 if args.quick else 4
    servers = parse_list(args.servers, list(SERVERS), "server")
    scenarios = parse_list(args.scenarios, list(SCENARIOS), "scenario")
    conn_override = [int(x) for x in args.connections.split(",")] if args.connections else None

    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit("%s not found: run bash bench/setup.sh" % tool)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(RAW, exist_ok=True)
    log_dir = os.path.join(RAW, "logs-" + stamp)
    os.makedirs(log_dir, exist_ok=True)
    raw_path = os.path.join(RAW, stamp + ".json")

    def log(msg):
        print(msg, flush=True)

    ncpu = os.cpu_count() or 1
    server_cpu, client_cpu = 0, (1 if ncpu > 1 else 0)
    notes = []
    if ncpu < 2:
        notes.append("only one CPU: server and wrk share CPU 0")

    # Osprey binaries
    ctx = {"osprey_bins": {}, "osprey_notes": {}, "osprey_threads": args.osprey_threads}
    for name, opt, kind in (("osprey", args.osprey, "jit"), ("osprey-aot", args.osprey_aot, "aot")):
        if name not in servers:
            continue
        if opt:
            if os.access(opt, os.X_OK):
                ctx["osprey_bins"][name] = os.path.abspath(opt)
                notes.append("%s: using %s" % (name, describe_binary(opt)))
            else:
                ctx["osprey_notes"][name] = "binary %s not found or not executable" % opt
                notes.append("%s: %s" % (name, ctx["osprey_notes"][name]))
            continue
        default = default_binary(kind)
        if args.no_build:
            if os.access(default, os.X_OK):
                ctx["osprey_bins"][name] = default
                notes.append("%s: using existing %s (--no-build)"
                             % (name, describe_binary(os.path.relpath(default, ROOT))))
            else:
                ctx["osprey_notes"][name] = "--no-build and no %s" % os.path.relpath(default, ROOT)
                notes.append("%s: %s" % (name, ctx["osprey_notes"][name]))
            continue
        binary, note = build_osprey(kind, log_dir, log)
        log("  " + note)
        notes.append("%s: %s" % (name, note))
        if binary:
            ctx["osprey_bins"][name] = binary
        else:
            ctx["osprey_notes"][name] = note

    ctx["floor_bins"], ctx["floor_notes"] = {}, {}
    for name, (source, extra) in FLOORS.items():
        if name not in servers:
            continue
        binary = os.path.join(RAW, name)
        cc = shutil.which("cc") or shutil.which("gcc")
        try:
            link = extra()
        except Skip as why:
            link, ctx["floor_notes"][name] = None, str(why)
        if not cc:
            ctx["floor_notes"][name] = "no C compiler (cc)"
        elif link is not None:
            done = subprocess.run([cc, "-O2", "-o", binary, os.path.join(BENCH, "floor", source)] + link,
                                  capture_output=True, text=True)
            if done.returncode == 0:
                ctx["floor_bins"][name] = binary
            else:
                lines = done.stderr.strip().splitlines()
                ctx["floor_notes"][name] = "cc failed: " + (lines[-1] if lines else "exit %d" % done.returncode)
        if name in ctx["floor_notes"]:
            notes.append("%s: %s" % (name, ctx["floor_notes"][name]))

    if any(SCENARIOS[sc].get("throughput") for sc in scenarios):
        pull_bin = os.path.join(RAW, "pull")
        cc = shutil.which("cc") or shutil.which("gcc")
        done = subprocess.run([cc, "-O2", "-o", pull_bin, os.path.join(BENCH, "client", "pull.c")],
                              capture_output=True, text=True) if cc else None
        if done is not None and done.returncode == 0:
            ctx["pull_bin"] = pull_bin
        else:
            notes.append("pull client not built: %s" % (
                "no C compiler (cc)" if done is None else (done.stderr.strip().splitlines() or ["cc failed"])[-1]))

    # from here on the runner itself stays off the server's CPU
    try:
        os.sched_setaffinity(0, {client_cpu})
    except (AttributeError, OSError):
        pass

    if "filewrap" in scenarios:
        ensure_big_file(DEFAULT_BIG_FILE, log)
    need = [s for s in scenarios if s in OVERHEAD_SCENARIOS]
    app_us = app_overhead(need, log) if need else {}

    data = {
        "meta": dict(machine_facts(), servers=servers, scenarios=scenarios, app_us=app_us,
                     notes=notes, server_cpu=server_cpu, client_cpu=client_cpu,
                     options={"quick": args.quick, "duration": args.duration, "warmup": args.warmup,
                              "max_runs": args.max_runs, "tolerance": args.tolerance,
                              "osprey_threads": args.osprey_threads, "connections": conn_override,
                              "interleaved": True, "convergence": "best-two"},
                     raw_path=os.path.relpath(raw_path, ROOT), log_dir=os.path.relpath(log_dir, ROOT)),
        "rows": [],
        "pull": [],
        "skipped": [],
        "probes": [],
    }

    def save():
        with open(raw_path, "w") as f:
            json.dump(data, f, indent=1)
        write_summary(data, args.summary)

    current = []  # servers started and not yet stopped

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    interrupted = False
    probe = MachineProbe(server_cpu, log)
    try:
        for sc in scenarios:
            spec = SCENARIOS[sc]
            conns_list = conn_override or spec["conns"]
            # Every server of the scenario is started (one after the other, so each start is timed
            # alone) and stays up; then the rows are measured in rounds, one run of each server in
            # turn. A slow spell of the shared machine then falls on the runs of every server alike
            # instead of on one server's whole row.
            up = []
            try:
                for name in servers:
                    port = free_port()
                    ctx["scenario"] = sc
                    try:
                        argv_, cwd = server_command(name, spec["app"], port, ctx)
                    except Skip as exc:
                        log("== %s / %s: skipped: %s" % (sc, name, exc))
                        data["skipped"].append({"server": name, "scenario": sc, "reason": str(exc)})
                        continue
                    srv = Server(name, argv_, cwd, os.path.join(log_dir, "%s-%s.log" % (sc, name)),
                                 server_cpu)
                    current.append(srv)
                    try:
                        ms = srv.start(port, args.start_timeout)
                    except Skip as exc:
                        log("== %s / %s: skipped: failed to start: %s" % (sc, name, exc))
                        data["skipped"].append({"server": name, "scenario": sc,
                                                "reason": "failed to start: %s" % exc})
                        srv.stop()
                        continue
                    log("== %s / %s: up in %.0f ms (pid %d, port %d)" % (sc, name, ms, srv.proc.pid, port))
                    run_wrk(port, sc, conns_list[0], args.warmup, client_cpu)  # warm-up, discarded
                    up.append((srv, port))
                for c in conns_list:
                    log("== %s, %d connections" % (sc, c))
                    runs = {srv.name: [] for srv, _ in up}

                    def wrk_run(srv, port, machine_us):
                        done = next_run(srv, port, sc, c, args, client_cpu, app_us.get(sc), log, runs[srv.name])
                        runs[srv.name][-1]["machine_us"] = machine_us
                        return done

                    in_rounds(up, args.max_runs,
                              lambda rnd: probe_round(probe, data, log, "round %d" % rnd,
                                                      scenario=sc, connections=c, round=rnd),
                              wrk_run)
                    for srv, _ in up:
                        if runs[srv.name]:
                            row = make_row(srv, sc, c, runs[srv.name], converged_runs(runs[srv.name], args))
                        else:
                            row = {"server": srv.name, "scenario": sc, "connections": c,
                                   "status": "failed", "runs": [], "converged": False,
                                   "startup_ms": srv.startup_ms,
                                   "note": "server not running (%s): %s" % (srv.exit_status(), srv.log_tail())}
                        data["rows"].append(row)
                    save()
                if spec.get("throughput") and ctx.get("pull_bin"):
                    # In rounds like the wrk rows (one try of each server in turn, the machine probed
                    # before each round), repeated until the two best tries agree (then the best), else
                    # the median and the spread.
                    pullers = [(srv, port) for srv, port in up if srv.alive()]
                    tries = {srv.name: [] for srv, _ in pullers}
                    converged = {srv.name: False for srv, _ in pullers}

                    def pull_try(srv, port, machine_us):
                        tried = measure_pull(srv, port, args.duration, client_cpu, ctx["pull_bin"])
                        tried["machine_us"] = machine_us
                        tries[srv.name].append(tried)
                        if "error" in tried:
                            return True
                        log("    %-16s pull try %d: %.2f GB/s, %.2f CPU-s per GB"
                            % (srv.name, len(tries[srv.name]), tried["gbps"], tried["cpu_s_per_gb"] or 0))
                        top = best_two(tries[srv.name], lambda t: t["gbps"])
                        converged[srv.name] = top is not None and agree(top[0]["gbps"], top[1]["gbps"], args.tolerance)
                        return converged[srv.name]

                    in_rounds(pullers, args.max_runs,
                              lambda rnd: probe_round(probe, data, log, "pull round %d" % rnd,
                                                      scenario=sc, pull=True, round=rnd),
                              pull_try)
                    for srv, _ in pullers:
                        if not tries[srv.name]:
                            continue
                        good = [t for t in tries[srv.name] if "error" not in t]
                        pull = reported(good, lambda t: t["gbps"], converged[srv.name]) if good else tries[srv.name][-1]
                        pull = dict(pull, server=srv.name, scenario=sc, runs=len(good),
                                    spread_pct=spread_pct([t["gbps"] for t in good]), converged=converged[srv.name],
                                    tries=tries[srv.name])
                        data["pull"].append(pull)
                        if "error" in pull:
                            log("    %-16s pull client: ERROR %s" % (srv.name, pull["error"]))
                        else:
                            log("    %-16s pull client: %.2f GB/s, server %.0f%% CPU, %.2f CPU-s per GB, client %.0f%% CPU"
                                % (srv.name, pull["gbps"], pull["server_cpu_pct"] or 0, pull["cpu_s_per_gb"] or 0,
                                   pull["client_cpu_pct"] or 0))
                        save()
            finally:
                while current:
                    current.pop().stop()
            save()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping")
        data["meta"]["notes"].append("run interrupted; results are partial")
    finally:
        while current:
            current.pop().stop()
        probe.close()
        save()
    log("raw results: %s" % os.path.relpath(raw_path, ROOT))
    log("summary:     %s" % os.path.relpath(args.summary, ROOT))
    return 130 if interrupted else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # interrupted before any server was started
        print("interrupted", file=sys.stderr)
        sys.exit(130)
