"""Returns the WSGI environ as JSON.

str values are given as they are; any other value as {"type", "repr", "callable", "methods"}.
json.dumps(ensure_ascii=True) keeps latin-1 decoded text intact (as \\u00XX escapes).
"""
import importlib.util
import json
import sys

_METHODS = ('read', 'readline', 'readlines', '__iter__', 'write', 'writelines', 'flush', 'close')


def _describe(value):
    if isinstance(value, str):
        return value
    return {
        'type': type(value).__name__,
        'repr': repr(value),
        'callable': callable(value),
        'methods': [m for m in _METHODS if hasattr(value, m)],
    }


def app(environ, start_response):
    payload = {
        'environ': {key: _describe(value) for key, value in environ.items()},
        'python': {
            'executable': sys.executable,
            'prefix': sys.prefix,
            'base_prefix': sys.base_prefix,
            'path': list(sys.path),
            'version': sys.version,
            'flask_importable': importlib.util.find_spec('flask') is not None,
        },
    }
    body = json.dumps(payload, ensure_ascii=True, sort_keys=True).encode('ascii')
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]
