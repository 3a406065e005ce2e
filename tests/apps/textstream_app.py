"""sys.stdout and sys.stderr as the text streams applications expect (gunicorn's workers have
io.TextIOWrapper objects): reconfigured at import, as some applications do, written through their
binary .buffer, inspected (OutputCaptureTests)."""
import json
import logging
import sys
import threading

# Both at import time: an application doing either must still load.
sys.stdout.reconfigure(line_buffering=True)
sys.stderr.reconfigure(encoding='utf-8')

TEXT = [('Content-Type', 'text/plain')]


def _describe(stream):
    buffer = stream.buffer
    return {
        'type': type(stream).__name__,
        'name': stream.name,
        'encoding': stream.encoding,
        'errors': stream.errors,
        'line_buffering': stream.line_buffering,
        'fileno': stream.fileno(),
        'isatty': stream.isatty(),
        'seekable': stream.seekable(),
        'writable': stream.writable(),
        'readable': stream.readable(),
        'closed': stream.closed,
        'has_enter': hasattr(stream, '__enter__'),
        'buffer_fileno': buffer.fileno(),
        'buffer_writable': buffer.writable(),
    }


def app(environ, start_response):
    path = environ['PATH_INFO']
    marker = environ.get('QUERY_STRING', '') or 'marker'
    if path == '/streams':
        body = json.dumps({'stdout': _describe(sys.stdout), 'stderr': _describe(sys.stderr)}).encode()
        start_response('200 OK', [('Content-Type', 'application/json')])
        return [body]
    if path == '/buffer':
        written = sys.stdout.buffer.write(b'stdout-buffer-' + marker.encode() + b'\n')
        sys.stderr.buffer.write(bytearray(b'stderr-buffer-' + marker.encode() + b'\n'))
        sys.stdout.buffer.write(memoryview(b'memoryview-' + marker.encode() + b'\n'))
        sys.stdout.buffer.flush()
        start_response('200 OK', list(TEXT))
        return [b'written %d' % written]
    if path == '/text':
        # write() returns the number of characters, as a text stream's does.
        count = sys.stdout.write('stdout-text-' + marker + '\n')
        print('stderr-text-' + marker, file=sys.stderr, flush=True)
        logging.getLogger('textstream').warning('logged-%s', marker)
        start_response('200 OK', list(TEXT))
        return [b'%d' % count]
    if path == '/surrogate':
        # A file name that was not UTF-8, as os.listdir() gives it.
        print('lone \udcff surrogate ' + marker)
        start_response('200 OK', list(TEXT))
        return [b'printed']
    if path == '/threads':
        # Lines printed from many threads at once must each reach the log whole.
        def run(t):
            for i in range(100):
                print('%s-t%d-line%d-%s-end' % (marker, t, i, 'x' * 40))
        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        start_response('200 OK', list(TEXT))
        return [b'printed']
    start_response('404 Not Found', list(TEXT))
    return [b'no such route']
