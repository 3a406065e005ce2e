"""Exercises wsgi.input; the route (PATH_INFO) picks the read style.

Every route answers JSON: {"parts": [...latin-1 strings...], "all_bytes": bool, ...}.
"""
import hashlib
import json
import time
from urllib.parse import parse_qs


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get('QUERY_STRING', '')).items()}


def _read_loop(read):
    parts = []
    while True:
        chunk = read()
        if not chunk:
            return parts
        parts.append(chunk)


def app(environ, start_response):
    path = environ['PATH_INFO']
    query = _query(environ)
    inp = environ['wsgi.input']
    extra = {}
    if path == '/read':
        parts = [inp.read()]
    elif path == '/readn':
        n = int(query.get('n', '5'))
        parts = _read_loop(lambda: inp.read(n))
    elif path == '/readline':
        parts = _read_loop(inp.readline)
    elif path == '/readline_n':
        n = int(query.get('n', '3'))
        parts = _read_loop(lambda: inp.readline(n))
    elif path == '/readlines':
        parts = inp.readlines()
    elif path == '/readlines_hint':
        parts = inp.readlines(int(query.get('hint', '10')))
        extra['rest'] = inp.read().decode('latin-1')
    elif path == '/iter':
        parts = [line for line in inp]
    elif path == '/past_end':
        parts = [inp.read()]
        started = time.monotonic()
        again = inp.read()
        again10 = inp.read(10)
        again_line = inp.readline()
        extra['elapsed'] = time.monotonic() - started
        extra['again'] = [again.decode('latin-1'), again10.decode('latin-1'),
                          again_line.decode('latin-1')]
        extra['again_types'] = [type(x).__name__ for x in (again, again10, again_line)]
    elif path == '/sha256':
        # Large bodies: read in blocks of ?n= bytes (0 = one read()) and report a digest.
        n = int(query.get('n', '65536'))
        digest = hashlib.sha256()
        length = 0
        blocks = [inp.read()] if n == 0 else _read_loop(lambda: inp.read(n))
        for block in blocks:
            digest.update(block)
            length += len(block)
        parts = []
        extra['length'] = length
        extra['sha256'] = digest.hexdigest()
    elif path == '/mixed':
        # Every read style in turn, so reads that start with the stream's own buffer empty and
        # reads that start with bytes left in it follow each other on one body.
        parts = [inp.read(5), inp.read(995), inp.readline(), inp.read(15384), inp.read(7),
                 inp.readline(), inp.read(), inp.read(), inp.readline()]
        extra['lengths'] = [len(p) for p in parts]
    elif path == '/ignore':
        parts = []
        extra['ignored'] = True
    else:
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'no such route']
    payload = {
        'parts': [p.decode('latin-1') if isinstance(p, bytes) else repr(p) for p in parts],
        'all_bytes': all(isinstance(p, bytes) for p in parts),
    }
    payload.update(extra)
    body = json.dumps(payload, ensure_ascii=True).encode('ascii')
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]
