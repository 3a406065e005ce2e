"""A small app wrapped in wsgiref.validate.validator, with WSGI warnings turned into errors.

Any violation of PEP 3333 the validator sees (in the environ, wsgi.input, wsgi.errors,
start_response or the iterable protocol, e.g. close() not called) raises AssertionError
or WSGIWarning, which shows up in the error log.
"""
import warnings
from wsgiref.validate import WSGIWarning, validator

# Only the validator's warnings: unrelated ones (e.g. ResourceWarning) are not what this app checks.
warnings.simplefilter('error', WSGIWarning)


def _inner(environ, start_response):
    inp = environ['wsgi.input']
    length = int(environ.get('CONTENT_LENGTH') or 0)
    first_line = inp.readline() if length else b''
    rest = inp.read(length - len(first_line)) if length > len(first_line) else b''
    environ['wsgi.errors'].write('')
    environ['wsgi.errors'].flush()
    body = b'method=%s;path=%s;query=%s;first=%r;rest=%r' % (
        environ['REQUEST_METHOD'].encode(), environ['PATH_INFO'].encode('latin-1'),
        environ['QUERY_STRING'].encode('latin-1'), first_line, rest)
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                              ('Content-Length', str(len(body)))])

    def chunks():
        yield body[:10]
        yield body[10:]
    return chunks()


app = validator(_inner)
