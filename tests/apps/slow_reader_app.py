"""Served over TLS by Http2SlowClientTests: responses too large for a client's HTTP/2 flow-control
window, as one bytes item or through wsgi.file_wrapper, and a count of the iterables closed."""
import io
import tempfile
import threading

_BIG = 8 * 1024 * 1024
_lock = threading.Lock()
_closed = 0
_file = tempfile.TemporaryFile()
_file.write(b'f' * _BIG)
_file.flush()


class _Counted:
    """The response iterable: counts its close(), which the server owes it when the client is dropped."""

    def __init__(self, inner):
        self._inner = inner

    def __iter__(self):
        return iter(self._inner)

    def close(self):
        global _closed
        with _lock:
            _closed += 1


class _CountedFile(io.FileIO):
    def close(self):
        _Counted.close(self)
        super().close()


def app(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/big':
        start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(_BIG))])
        return _Counted([b'b' * _BIG])
    if path == '/file':
        start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(_BIG))])
        counted = _CountedFile(_file.fileno(), 'rb', closefd=False)
        counted.seek(0)
        return environ['wsgi.file_wrapper'](counted)
    body = ('closed %d' % _closed).encode('ascii')
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
