"""One route per response behaviour the server must get right (see the integration tests)."""
import gzip
import io
import json
import os
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs

TEXT = [('Content-Type', 'text/plain')]

# Deterministic binary content for the file_wrapper routes: every byte value, 300 KiB + 3.
# One shared file in the temp dir (servers are killed, so nothing would clean up per-process copies).
FILE_CONTENT = bytes(range(256)) * 1200 + b'end'
FILE_PATH = os.path.join(tempfile.gettempdir(), 'osprey-filewrapper-%d.bin' % len(FILE_CONTENT))
if not os.path.isfile(FILE_PATH) or os.path.getsize(FILE_PATH) != len(FILE_CONTENT):
    _fd, _tmp = tempfile.mkstemp(prefix='osprey-filewrapper-', suffix='.tmp')
    with os.fdopen(_fd, 'wb') as _f:
        _f.write(FILE_CONTENT)
    os.replace(_tmp, FILE_PATH)  # atomic: concurrent servers never see a partial file

# FILE_CONTENT gzip-compressed, for wsgi.file_wrapper(gzip.open(...)): whose fileno() is the compressed file's.
GZIP_PATH = FILE_PATH + '.gz'
if not os.path.isfile(GZIP_PATH) or gzip.decompress(open(GZIP_PATH, 'rb').read()) != FILE_CONTENT:
    _fd, _tmp = tempfile.mkstemp(prefix='osprey-filewrapper-', suffix='.tmp')
    with os.fdopen(_fd, 'wb') as _f:
        _f.write(gzip.compress(FILE_CONTENT))
    os.replace(_tmp, GZIP_PATH)

# id -> {"yielded": n, "finished": bool, "closed": bool}, for close() tracking.
_tracked = {}
_lock = threading.Lock()


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get('QUERY_STRING', '')).items()}


def _record(track_id, **changes):
    with _lock:
        state = _tracked.setdefault(track_id, {'yielded': 0, 'finished': False, 'closed': False})
        for key, value in changes.items():
            state[key] = state[key] + value if key == 'yielded' else value


class CloseTracker:
    """An iterable with close(): ?count chunks of ?size bytes, ?delay seconds apart."""

    def __init__(self, track_id, count, size, delay):
        self.track_id, self.count, self.size, self.delay = track_id, count, size, delay
        _record(track_id)

    def __iter__(self):
        for i in range(self.count):
            if i and self.delay:
                time.sleep(self.delay)
            _record(self.track_id, yielded=1)
            yield (b'%d:' % i).ljust(self.size, b'.')
        _record(self.track_id, finished=True)

    def close(self):
        _record(self.track_id, closed=True)


class TrackedBytesIO(io.BytesIO):
    def __init__(self, track_id, data):
        super().__init__(data)
        self.track_id = track_id
        _record(track_id)

    def close(self):
        _record(self.track_id, closed=True)
        super().close()


# start_response, write and wsgi.input of an earlier request, kept by the application (/keep).
_kept = {}


def _use_kept():
    """Call each kept object; report what each did, 'name:none' if it was accepted."""
    uses = (('start_response', lambda: _kept['start_response']('200 OK', list(TEXT))),
            ('write', lambda: _kept['write'](b'late')),
            ('input', lambda: _kept['input'].read()))
    results = []
    for name, use in uses:
        try:
            use()
            results.append(name + ':none')
        except Exception as e:  # noqa: BLE001 - reporting the type is the point
            results.append('%s:%s' % (name, type(e).__name__))
    return ';'.join(results)


def _caught(environ, start_response, attempt):
    """Run attempt(); report in a 200 body which exception start_response raised."""
    try:
        attempt()
    except Exception as e:  # noqa: BLE001 - reporting the type is the point
        # exc_info lets start_response replace whatever the failed call may have stored.
        start_response('200 OK', list(TEXT), sys.exc_info())
        return [('caught:' + type(e).__name__).encode()]
    # No exception: the bad status/headers were accepted and are what the server sends.
    return [b'caught:none']


class _BadStrError(Exception):
    """An exception whose str() itself raises: the log still needs its traceback."""

    def __str__(self):
        raise RuntimeError('str() of _BadStrError failed')


class _IterRaises:
    """A response object whose __iter__ raises: the log needs that traceback, not 'not an iterable'."""

    def __iter__(self):
        raise KeyError('iter_raises marker')


class _FileProxy:
    """What Django's File (FileProxyMixin) passes on: read, fileno and tell are the real file's own methods."""

    def __init__(self, file):
        self.file = file

    read = property(lambda self: self.file.read)
    fileno = property(lambda self: self.file.fileno)
    tell = property(lambda self: self.file.tell)
    close = property(lambda self: self.file.close)


class _InvertingReader(io.BufferedReader):
    """A real file whose read() gives other bytes than the file holds (each byte inverted)."""

    _TABLE = bytes(255 - b for b in range(256))

    def read(self, size=-1):
        return super().read(size).translate(self._TABLE)


class _PlainFileIO(io.FileIO):
    """A FileIO subclass that keeps FileIO's read(): still a plain file."""


class _ListBacked:
    def __init__(self, items):
        self._items = items

    def __iter__(self):
        return iter(self._items)


def app(environ, start_response):
    path = environ['PATH_INFO']
    q = _query(environ)

    if path == '/list1':
        start_response('200 OK', list(TEXT))
        return [b'hello']
    if path == '/echo_items':
        # The request body between a small prefix and suffix, as three items with a Content-Length
        # (?chunked=1: without one; ?single=1: joined into one item).
        length = int(environ.get('CONTENT_LENGTH') or 0)
        body = environ['wsgi.input'].read(length)
        items = [b'<' + str(len(body)).encode() + b'>', body, b'</end>']
        headers = [('Content-Type', 'application/octet-stream')]
        if q.get('chunked') != '1':
            headers.append(('Content-Length', str(sum(len(i) for i in items))))
        start_response('200 OK', headers)
        return items if q.get('single') != '1' else [items[0] + items[1] + items[2]]
    if path == '/list3':
        start_response('200 OK', list(TEXT))
        return [b'a', b'bb', b'ccc']
    if path == '/iter1':
        # Like Django's HttpResponse: not a list, but iterating it gives a list iterator.
        start_response('200 OK', list(TEXT))
        return _ListBacked([b'hello'])
    if path == '/iter_tuple3':
        start_response('200 OK', list(TEXT))
        return iter((b'a', b'bb', b'ccc'))
    if path == '/gen1':
        def gen1():
            yield b'only'
        start_response('200 OK', list(TEXT))
        return gen1()
    if path == '/gen':
        def gen():
            yield b'g1'
            yield b''
            yield b'g2'
            yield b'g3'
        start_response('200 OK', list(TEXT))
        return gen()
    if path == '/slowgen':
        delay = float(q.get('delay', '0.5'))

        def slow():
            yield b'first;'
            time.sleep(delay)
            yield b'second'
        start_response('200 OK', list(TEXT))
        return slow()
    if path == '/burst':
        # ?n blocks at once, then a pause, then one more: every block of the burst must be
        # on the wire during the pause, not held back for the block after it.
        n, delay = int(q.get('n', '5')), float(q.get('delay', '1'))

        def burst():
            for i in range(n):
                yield b'b%d;' % i
            time.sleep(delay)
            yield b'end'
        start_response('200 OK', list(TEXT))
        return burst()
    if path == '/many':
        # ?count numbered blocks of ?size bytes as fast as the generator can yield them.
        count, size = int(q.get('count', '1000')), int(q.get('size', '100'))

        def many():
            for i in range(count):
                yield (b'%d:' % i).ljust(size, b'.')
        start_response('200 OK', list(TEXT))
        return many()
    if path == '/empty_gen':
        def empty():
            return
            yield b''  # noqa: unreachable - makes this a generator
        start_response('200 OK', list(TEXT))
        return empty()
    if path == '/cl_short':
        start_response('200 OK', TEXT + [('Content-Length', '10')])
        return [b'12345']
    if path == '/cl_short_empty':
        # Declares 10 bytes and sends none: the head still goes out, then the connection closes.
        start_response('200 OK', TEXT + [('Content-Length', '10')])
        return []
    if path == '/empty_header':
        # RFC 9110 allows an empty field value; it must go out, not vanish.
        start_response('200 OK', TEXT + [('X-Empty', ''), ('X-After', 'y')])
        return [b'hello']
    if path == '/cl_long':
        start_response('200 OK', TEXT + [('Content-Length', '5')])
        return [b'12345', b'67890']
    if path == '/204':
        start_response('204 No Content', [])
        return []
    if path == '/204_with_body':
        # Django's HttpResponse('ok', status=204) under CommonMiddleware: a body and its length.
        start_response('204 No Content', [('Content-Length', '5')])
        return [b'hello']
    if path == '/205_with_body':
        start_response('205 Reset Content', list(TEXT))
        return [b'hello']
    if path == '/cl_twice_same':
        start_response('200 OK', TEXT + [('Content-Length', '5'), ('Content-Length', '5')])
        return [b'hello']
    if path == '/cl_conflict':
        try:
            start_response('200 OK', TEXT + [('Content-Length', '3'), ('Content-Length', '5')])
        except ValueError as e:
            start_response('200 OK', list(TEXT))
            return [b'refused: ' + str(e).encode()]
        return [b'abcde']
    if path == '/304':
        start_response('304 Not Modified', [('ETag', '"v1"')])
        return []
    if path == '/head':
        start_response('200 OK', TEXT + [('Content-Length', '11')])
        return [b'hello world']
    if path == '/close_tracker':
        start_response('200 OK', list(TEXT))
        return CloseTracker(q['id'], int(q.get('count', '3')), int(q.get('size', '16')),
                            float(q.get('delay', '0')))
    if path == '/close_status':
        with _lock:
            state = dict(_tracked.get(q['id'], {}))
        body = json.dumps(state).encode()
        start_response('200 OK', [('Content-Type', 'application/json'),
                                  ('Content-Length', str(len(body)))])
        return [body]
    if path == '/write':
        write = start_response('200 OK', TEXT + [('Content-Length', '11')])
        write(b'hello ')
        write(b'world')
        return []
    if path == '/write_then_filewrapper':
        # Declares 5 + 100 bytes: write() sends 5, so only 100 of the file may follow.
        write = start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', '105')])
        write(b'hello')
        return environ['wsgi.file_wrapper'](open(FILE_PATH, 'rb'), 8192)
    if path == '/exc_info_not_an_exception':
        # sys.exc_info() outside an except block is (None, None, None).
        def body():
            yield b'%d;' % os.getpid()
            try:
                start_response('500 Internal Server Error', list(TEXT), (None, None, None))
            except TypeError:
                yield b'TypeError'
                return
            yield b'accepted'
        start_response('200 OK', list(TEXT))
        return body()
    if path == '/print_surrogate':
        # A file name that was not UTF-8, as os.listdir() gives it.
        print('listing \udcff.txt')
        sys.stderr.write('and \udcfe\n')
        start_response('200 OK', list(TEXT))
        return [b'printed']
    if path == '/write_mixed':
        write = start_response('200 OK', list(TEXT))
        write(b'written;')
        return [b'returned']
    if path == '/exc_info_before':
        start_response('200 OK', TEXT + [('X-First', 'yes')])
        try:
            raise ValueError('exc_info_before marker')
        except ValueError:
            start_response('500 Internal Server Error', TEXT + [('X-Handled', 'exc_info')],
                           sys.exc_info())
        return [b'handled error']
    if path == '/exc_info_after':
        def after():
            yield b'first chunk;'
            try:
                raise ValueError('exc_info_after marker')
            except ValueError:
                start_response('500 Internal Server Error', list(TEXT), sys.exc_info())
            yield b'must not be sent'
        start_response('200 OK', list(TEXT))
        return after()
    if path == '/keep':
        write = start_response('200 OK', list(TEXT))
        _kept.update(start_response=start_response, write=write, input=environ['wsgi.input'])
        return [b'kept']
    if path == '/use_kept':
        outcome = _use_kept()
        start_response('200 OK', list(TEXT))
        return [outcome.encode()]
    if path == '/double_start':
        start_response('200 OK', list(TEXT))
        try:
            start_response('201 Created', list(TEXT))
            outcome = 'none'
        except Exception as e:  # noqa: BLE001
            outcome = type(e).__name__
        return [('caught:' + outcome).encode()]
    if path == '/bad_header_crlf':
        return _caught(environ, start_response,
                       lambda: start_response('200 OK', [('X-Bad', 'a\r\nInjected: yes')]))
    if path == '/bad_header_lf':
        return _caught(environ, start_response,
                       lambda: start_response('200 OK', [('X-Bad', 'a\nInjected: yes')]))
    if path == '/bad_header_name':
        return _caught(environ, start_response,
                       lambda: start_response('200 OK', [('X-Bad: Injected', 'yes')]))
    if path == '/bad_header_hop':
        return _caught(environ, start_response,
                       lambda: start_response('200 OK', [('Connection', 'close')]))
    if path == '/bad_status':
        return _caught(environ, start_response,
                       lambda: start_response(q.get('s', '200'), list(TEXT)))
    if path == '/non_latin1_header':
        return _caught(environ, start_response,
                       lambda: start_response('200 OK', [('X-Euro', 'caf\u20ac')]))
    if path == '/bytes_header':
        return _caught(environ, start_response,
                       lambda: start_response('200 OK', [('X-Bytes', b'value')]))
    if path == '/str_body':
        start_response('200 OK', list(TEXT))
        return ['text']
    if path == '/bare_str_body':
        start_response('200 OK', list(TEXT))
        return 'text'
    if path == '/none_body':
        start_response('200 OK', list(TEXT))
        return None
    if path == '/int_body':
        start_response('200 OK', list(TEXT))
        return 42
    if path == '/raise':
        raise RuntimeError('raise marker: before start_response')
    if path == '/raise_surrogate':
        # A message with a lone surrogate (a file name that was not UTF-8): not valid UTF-8 as it stands.
        raise ValueError('bad name \udcff here')
    if path == '/raise_badstr':
        raise _BadStrError('raise_badstr marker')
    if path == '/iter_raises':
        start_response('200 OK', list(TEXT))
        return _IterRaises()
    if path == '/raise_after_headers':
        def broken():
            yield b'partial;'
            raise RuntimeError('raise_after_headers marker')
        start_response('200 OK', list(TEXT))
        return broken()
    if path == '/print':
        marker = q.get('m', 'marker')
        print('stdout-' + marker)
        print('stderr-' + marker, file=sys.stderr)
        environ['wsgi.errors'].write('errors-' + marker + '\n')
        environ['wsgi.errors'].flush()
        start_response('200 OK', list(TEXT))
        return [b'printed']
    if path == '/filewrapper':
        f = open(FILE_PATH, 'rb')
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('Content-Length', str(len(FILE_CONTENT)))])
        return environ['wsgi.file_wrapper'](f, 8192)
    if path == '/filewrapper_big':
        # FILE_CONTENT repeated ?copies times: large enough that a slow reader leaves most of it
        # to the engine's loop after the application's thread has moved on.
        copies = int(q.get('copies', '16'))
        big_path = FILE_PATH + '.x%d' % copies
        if not os.path.isfile(big_path) or os.path.getsize(big_path) != len(FILE_CONTENT) * copies:
            fd, tmp = tempfile.mkstemp(prefix='osprey-filewrapper-', suffix='.tmp')
            with os.fdopen(fd, 'wb') as f:
                f.write(FILE_CONTENT * copies)
            os.replace(tmp, big_path)
        f = open(big_path, 'rb')
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('Content-Length', str(len(FILE_CONTENT) * copies))])
        return environ['wsgi.file_wrapper'](f, 8192)
    if path == '/filewrapper_shrink':
        # A 64 MB (sparse) file, named in X-File so that the test can truncate it while the
        # response is on its way; with ?chunked, write() goes first so the response is chunked.
        shrink_path = os.path.join(tempfile.gettempdir(), 'osprey-shrink-%s.bin' % q['id'])
        with open(shrink_path, 'wb') as g:
            g.truncate(64 << 20)
        f = open(shrink_path, 'rb')
        write = start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('X-File', shrink_path)])
        if 'chunked' in q:
            write(b'PREFIX')
        return environ['wsgi.file_wrapper'](f, 65536)
    if path == '/filewrapper_nocl':
        f = open(FILE_PATH, 'rb')
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](f, 8192)
    if path == '/filewrapper_kind':
        # ?kind: gzip (read() decompresses), proxy (Django's File around open()), inverted (a read() override),
        # fileio (a FileIO subclass), offset (an open() file already read 1000 bytes into).
        kind = q['kind']
        if kind == 'gzip':
            f = gzip.open(GZIP_PATH, 'rb')
        elif kind == 'proxy':
            f = _FileProxy(open(FILE_PATH, 'rb'))
        elif kind == 'inverted':
            f = _InvertingReader(io.FileIO(FILE_PATH, 'rb'))
        elif kind == 'fileio':
            f = _PlainFileIO(FILE_PATH, 'rb')
        else:
            f = open(FILE_PATH, 'rb')
            f.read(1000)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](f, 8192)
    if path == '/filewrapper_bytesio':
        f = TrackedBytesIO(q.get('id', 'bytesio'), FILE_CONTENT)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](f, 1000)
    if path == '/expect':
        body = environ['wsgi.input'].read()
        start_response('200 OK', list(TEXT))
        return [b'got:' + body]
    if path == '/expect_stream_then_read':
        # Starts its response before it reads the body of an Expect: 100-continue request.
        def stream():
            yield b'head-sent;'
            yield b'read=' + environ['wsgi.input'].read()
        start_response('200 OK', list(TEXT))
        return stream()
    if path == '/expect_ignore':
        start_response('200 OK', list(TEXT))
        return [b'ignored']
    start_response('404 Not Found', list(TEXT))
    return [b'no such route: ' + path.encode('latin-1')]
