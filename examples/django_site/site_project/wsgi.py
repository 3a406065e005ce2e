"""WSGI entry point: `osprey site_project.wsgi:application` (or gunicorn, same argument).

Osprey has no static-file handler (yet), so this module serves STATIC_ROOT at STATIC_URL and
MEDIA_ROOT at MEDIA_URL itself, with wsgi.file_wrapper (which Osprey sends from the file
descriptor). A public site would put a proxy or whitenoise in front instead; for the example
this keeps the dependencies to Debian's python3-django.
"""
import mimetypes
import os
from email.utils import formatdate, parsedate_to_datetime

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_project.settings')


class FilesMiddleware:
    """Serves GET/HEAD requests under the given URL prefixes from directories; the rest goes to the app."""

    def __init__(self, app, mounts):
        self.app = app
        self.mounts = [(prefix, os.path.realpath(root)) for prefix, root in mounts]

    def __call__(self, environ, start_response):
        path = environ.get('PATH_INFO', '')
        for prefix, root in self.mounts:
            if path.startswith(prefix):
                return self.serve(environ, start_response, root, path[len(prefix):])
        return self.app(environ, start_response)

    @staticmethod
    def serve(environ, start_response, root, relative):
        def plain(status, text, extra=()):
            body = text.encode()
            start_response(status, [('Content-Type', 'text/plain; charset=utf-8'),
                                    ('Content-Length', str(len(body)))] + list(extra))
            return [body]

        method = environ.get('REQUEST_METHOD')
        if method not in ('GET', 'HEAD'):
            return plain('405 Method Not Allowed', 'Method not allowed\n', [('Allow', 'GET, HEAD')])
        # PATH_INFO is the raw bytes decoded as latin-1 (PEP 3333): get the UTF-8 file name back.
        relative = relative.encode('latin-1').decode('utf-8', 'replace')
        full = os.path.realpath(os.path.join(root, relative))
        if not full.startswith(root + os.sep) or not os.path.isfile(full):
            return plain('404 Not Found', 'Not found\n')
        stat = os.stat(full)
        last_modified = formatdate(stat.st_mtime, usegmt=True)
        since = environ.get('HTTP_IF_MODIFIED_SINCE')
        if since:
            try:
                if int(stat.st_mtime) <= parsedate_to_datetime(since).timestamp():
                    start_response('304 Not Modified', [('Last-Modified', last_modified)])
                    return []
            except (TypeError, ValueError):
                pass
        content_type, encoding = mimetypes.guess_type(full)
        content_type = content_type or 'application/octet-stream'
        if content_type.startswith('text/') or content_type == 'application/javascript':
            content_type += '; charset=utf-8'
        headers = [('Content-Type', content_type), ('Content-Length', str(stat.st_size)),
                   ('Last-Modified', last_modified)]
        if encoding:
            headers.append(('Content-Encoding', encoding))
        f = open(full, 'rb')
        start_response('200 OK', headers)
        file_wrapper = environ.get('wsgi.file_wrapper')
        if file_wrapper is not None:
            return file_wrapper(f, 65536)
        return iter(lambda: f.read(65536), b'')


application = FilesMiddleware(get_wsgi_application(), [
    (settings.STATIC_URL, settings.STATIC_ROOT),
    (settings.MEDIA_URL, settings.MEDIA_ROOT),
])
