"""Osprey's demo: a plain PEP 3333 application using only the standard library."""
import html
import json
import time
from urllib.parse import parse_qs

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Osprey demo</title></head>
<body>
<h1>Hello from Osprey</h1>
<p>This page is served by a C# HTTP core calling Python {version} embedded in the same process.</p>
<form method="post" action="/greet"><input name="name" placeholder="Your name"> <button>Greet</button></form>
<ul>
  <li><a href="/environ">/environ</a>: the WSGI environ as JSON</li>
  <li><a href="/stream">/stream</a>: a streamed response, one line every 200 ms</li>
</ul>
</body></html>
"""


def app(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    if path == '/':
        import sys
        body = PAGE.format(version=sys.version.split()[0]).encode()
        start_response('200 OK', [('Content-Type', 'text/html; charset=utf-8')])
        return [body]
    if path == '/greet' and environ['REQUEST_METHOD'] == 'POST':
        length = int(environ.get('CONTENT_LENGTH') or 0)
        form = parse_qs(environ['wsgi.input'].read(length).decode())
        name = html.escape(form.get('name', ['stranger'])[0])
        start_response('200 OK', [('Content-Type', 'text/html; charset=utf-8')])
        return [f'<p>Hello, {name}!</p><p><a href="/">back</a></p>'.encode()]
    if path == '/environ':
        data = {k: v if isinstance(v, str) else repr(v) for k, v in environ.items()}
        start_response('200 OK', [('Content-Type', 'application/json')])
        return [json.dumps(data, indent=2, sort_keys=True).encode()]
    if path == '/stream':
        start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8')])
        return stream()
    start_response('404 Not Found', [('Content-Type', 'text/plain')])
    return [b'Not Found\n']


def stream():
    for i in range(10):
        yield f'line {i}\n'.encode()
        time.sleep(0.2)
