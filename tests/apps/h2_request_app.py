"""Served over TLS by Http2RequestTests: a count of the requests that reached the application, the
header fields it was given, the length of an uploaded body (also read only after the response has
started), and a response sent in pieces a second apart (to watch a stream go on while another
stream of its connection is ended)."""
import json
import threading
import time

_lock = threading.Lock()
_calls = 0


def _pieces(count):
    for i in range(count):
        if i:
            time.sleep(1)
        yield b'piece %d\n' % i


def _late_upload(environ):
    yield b'started\n'
    yield str(len(environ['wsgi.input'].read())).encode('ascii')


def app(environ, start_response):
    global _calls
    path = environ['PATH_INFO']
    if path == '/calls':
        body = str(_calls).encode('ascii')
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    with _lock:
        _calls += 1
    if path == '/stream':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return _pieces(int(environ.get('QUERY_STRING') or '8'))
    if path == '/late-upload':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return _late_upload(environ)
    if path == '/upload':
        body = str(len(environ['wsgi.input'].read())).encode('ascii')
    else:
        fields = {key: value for key, value in environ.items() if key.startswith('HTTP_') or key == 'CONTENT_LENGTH'}
        body = json.dumps(fields).encode('latin-1')
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]
