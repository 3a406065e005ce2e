"""Fails at import time: the server must show this traceback and exit non-zero."""


def _explode():
    raise RuntimeError('broken_import marker: this module fails at import')


_explode()


def app(environ, start_response):  # pragma: no cover - never reached
    start_response('200 OK', [])
    return [b'unreachable']
