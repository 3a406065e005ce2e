"""Requests that run past --timeout, in Python and in C code that keeps the GIL (see TimeoutTests)."""
import ctypes
import time
from urllib.parse import parse_qs

TEXT = [('Content-Type', 'text/plain')]
# PyDLL calls keep the GIL: a C function that blocks stalls every Python thread, as a hung C
# extension would.
_libc_keeping_gil = ctypes.PyDLL(None)


def _seconds(environ):
    return float(parse_qs(environ.get('QUERY_STRING', '')).get('s', ['0'])[0])


def sleepy_view(environ, start_response):
    time.sleep(_seconds(environ))
    start_response('200 OK', TEXT)
    return [b'LATE-OUTPUT']


def c_hang_view(environ, start_response):
    print('c_hang_view: entering the C call', flush=True)
    _libc_keeping_gil.sleep(int(_seconds(environ)))
    start_response('200 OK', TEXT)
    return [b'LATE-OUTPUT']


def stream_then_hang(environ, start_response):
    start_response('200 OK', TEXT)
    yield b'first chunk;'
    time.sleep(_seconds(environ))
    yield b'LATE-OUTPUT'


def read_whole_body(environ, start_response):
    body = environ['wsgi.input'].read(int(environ.get('CONTENT_LENGTH') or 0))
    start_response('200 OK', TEXT)
    return [b'LATE-OUTPUT:' + body]


def app(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/read_body':
        return read_whole_body(environ, start_response)
    if path == '/sleep':
        return sleepy_view(environ, start_response)
    if path == '/c_sleep':
        return c_hang_view(environ, start_response)
    if path == '/stream_hang':
        return stream_then_hang(environ, start_response)
    start_response('200 OK', TEXT)
    return [b'fast']
