"""Served over TLS by TlsTests: the request as the application sees it, its body echoed, a
route that only answers 200 when two requests run at the same time (two HTTP/2 streams of one
connection, on two Python threads), an empty header value and a body short of its Content-Length."""
import json
import threading

_KEYS = ('wsgi.url_scheme', 'SERVER_PROTOCOL', 'SERVER_NAME', 'SERVER_PORT', 'HTTP_HOST',
         'REMOTE_ADDR', 'REMOTE_PORT', 'REQUEST_METHOD', 'PATH_INFO', 'QUERY_STRING',
         'CONTENT_LENGTH', 'wsgi.input_terminated')
_together = threading.Barrier(2, timeout=10)


def app(environ, start_response):
    path = environ['PATH_INFO']
    status = '200 OK'
    if path == '/together':
        try:
            _together.wait()
        except threading.BrokenBarrierError:
            status = '409 Conflict'
    if path == '/empty_header':
        start_response('200 OK', [('X-Empty', ''), ('X-After', 'y'), ('Content-Length', '5')])
        return [b'hello']
    if path == '/cl_short':
        # 10 of the 100 bytes declared: the client should get those 10 before the stream ends.
        start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', '100')])
        return [b'0123456789']
    if path == '/echo':
        body = environ['wsgi.input'].read()
    else:
        seen = {key: environ[key] for key in _KEYS if key in environ}
        body = json.dumps(seen, default=repr).encode('ascii')
    start_response(status, [('Content-Type', 'application/octet-stream'),
                            ('Content-Length', str(len(body)))])
    return [body]
