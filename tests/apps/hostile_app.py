"""Routes for the hostile-client tests (tests/Osprey.Tests/Hostile).

Every request's target is recorded, so a test can ask whether a request smuggled inside a body was
ever served (/seen?marker=X). Iterables with close() record it, so a test can prove close() ran
after the client went away (/closed?id=X).
"""
import json
import threading
from urllib.parse import parse_qs

_lock = threading.Lock()
_targets = []
_closed = {}


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get('QUERY_STRING', '')).items()}


def _json(start_response, obj, status='200 OK'):
    body = json.dumps(obj).encode()
    start_response(status, [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]


class Tracked:
    """Yields ?count chunks of ?size bytes; records close() (and how far it got) under ?id."""

    def __init__(self, track_id, chunks):
        self.track_id, self.chunks, self.yielded = track_id, chunks, 0
        with _lock:
            _closed[track_id] = {'closed': False, 'yielded': 0}

    def __iter__(self):
        for chunk in self.chunks:
            self.yielded += 1
            yield chunk

    def close(self):
        with _lock:
            _closed[self.track_id] = {'closed': True, 'yielded': self.yielded}


def _reading_chunks(inp, total):
    """Reads the (streamed) body while responding; yields one line per read."""
    got = 0
    while True:
        data = inp.read(65536)
        if not data:
            break
        got += len(data)
        yield b'%d\n' % got
    yield b'end %d of %d\n' % (got, total)


def app(environ, start_response):
    path = environ['PATH_INFO']
    query = _query(environ)
    if path == '/seen':
        marker = query['marker']
        with _lock:
            hits = [t for t in _targets if marker in t]
        return _json(start_response, {'hits': hits})
    with _lock:
        _targets.append(path + '?' + environ.get('QUERY_STRING', '') + ' ' + environ.get('HTTP_X_MARKER', ''))
        del _targets[:-10000]
    if path == '/closed':
        with _lock:
            state = _closed.get(query['id'])
        return _json(start_response, state or {'unknown': True})
    if path == '/echo':
        body = environ['wsgi.input'].read()
        return _json(start_response, {
            'method': environ['REQUEST_METHOD'], 'path': path, 'length': len(body),
            'body': body.decode('latin-1'),
        })
    if path == '/big':
        # ?size bytes in 64 KiB chunks, close() recorded under ?id.
        size = int(query.get('size', '1048576'))
        chunk = b'x' * 65536
        chunks = [chunk] * (size // len(chunk)) + ([b'y' * (size % len(chunk))] if size % len(chunk) else [])
        if query.get('one'):
            # The whole body as one item: one write of it all.
            chunks = [b''.join(chunks)]
        start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(size))])
        return Tracked(query.get('id', 'big'), chunks)
    if path == '/upload':
        # Streams the body back as progress lines (Expect: 100-continue makes the body streamed).
        total = int(environ.get('CONTENT_LENGTH') or 0)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return Tracked(query.get('id', 'upload'), _reading_chunks(environ['wsgi.input'], total))
    if path == '/status_crlf':
        start_response('200 OK\r\nX-Injected: 1', [('Content-Type', 'text/plain')])
        return [b'should not be sent']
    if path == '/status_lf':
        start_response('200 OK\nX-Injected: 1', [('Content-Type', 'text/plain')])
        return [b'should not be sent']
    if path == '/header_crlf':
        start_response('200 OK', [('X-Bad', 'a\r\nX-Injected: 1')])
        return [b'should not be sent']
    if path == '/header_nul':
        start_response('200 OK', [('X-Bad', 'a\x00b')])
        return [b'should not be sent']
    body = b'ok ' + environ['REQUEST_METHOD'].encode('latin-1') + b' ' + path.encode('latin-1')
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
