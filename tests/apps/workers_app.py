"""The process-model tests' application: every answer names the worker process that served it.

/pid            the worker's pid
/slow?s=SECONDS says "slow request started" on wsgi.errors, sleeps (releasing the GIL), then
                answers its pid: a test that must act while requests are in flight waits for the
                line, not for a fixed time that a loaded machine may not keep to
/hang-gil       blocks in C for 60 s WITHOUT releasing the GIL (libc sleep through ctypes.PyDLL,
                which keeps the GIL held during the call): the worker's Python is wedged
/grow?mb=N      keeps N more megabytes alive in this worker (for --max-worker-memory)

If the file named by $WORKERS_APP_BREAK exists at import, the import fails (a deploy that broke
the application, for the reload tests).
"""
import ctypes
import os
import time
from urllib.parse import parse_qs

_break = os.environ.get('WORKERS_APP_BREAK')
if _break and os.path.exists(_break):
    raise RuntimeError('workers_app marker: the application no longer imports')

_hoard = []


def app(environ, start_response):
    path = environ.get('PATH_INFO', '')
    query = parse_qs(environ.get('QUERY_STRING', ''))
    if path == '/slow':
        environ['wsgi.errors'].write('slow request started\n')
        environ['wsgi.errors'].flush()
        time.sleep(float(query.get('s', ['1'])[0]))
    elif path == '/hang-gil':
        ctypes.PyDLL(None).sleep(60)
    elif path == '/grow':
        mb = int(query.get('mb', ['100'])[0])
        block = bytearray(mb * 1024 * 1024)
        # Touch every page so the memory is resident, not just reserved.
        for i in range(0, len(block), 4096):
            block[i] = 1
        _hoard.append(block)
    body = str(os.getpid()).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
