"""Osprey example: a small Flask application (Debian's python3-flask).

It exercises what real applications do: a session-cookie login, a form POST with the
Post/Redirect/Get pattern, a multipart upload, a streamed CSV download, send_file, a JSON API,
redirects and custom 404/500 pages.

Serve it with `./scripts/serve-flask.sh`, or by hand:
    osprey --python /usr/bin/python3 --chdir examples/flask_app app:app

Environment:
    FLASK_APP_DATA      directory for uploads (default: ./uploads next to this file)
    FLASK_SECRET_KEY    key signing the session cookie (default: a fixed development key)
    FLASK_APP_USERS     "user:password,..." accounts (default: demo:demo)
"""
import csv
import hashlib
import io
import os
import threading

from flask import (Flask, Response, abort, flash, get_flashed_messages, jsonify, redirect,
                   render_template_string, request, send_file, session, stream_with_context,
                   url_for)
from werkzeug.utils import secure_filename

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get('FLASK_APP_DATA') or os.path.join(HERE, 'uploads')
os.makedirs(DATA, exist_ok=True)

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ.get('FLASK_SECRET_KEY', 'osprey-example-development-key'),
    MAX_CONTENT_LENGTH=64 * 1024 * 1024,
    SESSION_COOKIE_HTTPONLY=True,
    SESSION_COOKIE_SAMESITE='Lax',
)

USERS = dict(pair.split(':', 1) for pair in os.environ.get('FLASK_APP_USERS', 'demo:demo').split(','))

# The application's state; one process, so a lock is enough.
_lock = threading.Lock()
_notes = []
_items = {}
_next_item = [1]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }} - Osprey Flask example</title></head>
<body>
<header>{% if user %}Signed in as <b id="user">{{ user }}</b>
<form method="post" action="{{ url_for('logout') }}" style="display:inline"><button>Sign out</button></form>
{% else %}<a href="{{ url_for('login') }}">Sign in</a>{% endif %}</header>
{% for message in messages %}<p class="flash">{{ message }}</p>{% endfor %}
<h1>{{ title }}</h1>
{{ content|safe }}
</body></html>
"""


def page(title, content='', status=200):
    html = render_template_string(PAGE, title=title, content=content, user=session.get('user'),
                                  messages=get_flashed_messages())
    return html, status


def login_required(view):
    def wrapper(*args, **kwargs):
        if 'user' not in session:
            return redirect(url_for('login', next=request.path))
        return view(*args, **kwargs)
    wrapper.__name__ = view.__name__
    return wrapper


@app.route('/')
def index():
    return page('Home', '<ul><li><a href="/notes">Notes</a></li><li><a href="/upload">Upload</a></li>'
                        '<li><a href="/export.csv">CSV export</a></li><li><a href="/api/items">JSON API</a></li></ul>')


@app.route('/login', methods=['GET', 'POST'])
def login():
    error = ''
    if request.method == 'POST':
        username = request.form.get('username', '')
        if USERS.get(username) == request.form.get('password') and username:
            session.clear()
            session['user'] = username
            flash('Welcome, %s.' % username)
            target = request.args.get('next', '/')
            return redirect(target if target.startswith('/') and not target.startswith('//') else '/')
        error = '<p id="error">Wrong user name or password.</p>'
    form = ('<form method="post"><input name="username" placeholder="user">'
            '<input name="password" type="password" placeholder="password"><button>Sign in</button></form>')
    return page('Sign in', error + form, 401 if error else 200)


@app.route('/logout', methods=['POST'])
def logout():
    session.clear()
    return redirect(url_for('index'))


@app.route('/notes', methods=['GET', 'POST'])
@login_required
def notes():
    if request.method == 'POST':
        text = request.form.get('text', '').strip()
        if not text:
            return page('Notes', '<p id="error">A note needs some text.</p>', 400)
        with _lock:
            _notes.append((session['user'], text))
        flash('Note saved.')
        return redirect(url_for('notes'), code=303)
    with _lock:
        listed = list(_notes)
    items = ''.join('<li>%s: %s</li>' % (escape(u), escape(t)) for u, t in listed)
    form = '<form method="post"><textarea name="text"></textarea><button>Add</button></form>'
    return page('Notes', '<ul id="notes">%s</ul>%s' % (items, form))


def escape(text):
    from markupsafe import escape as _escape
    return str(_escape(text))


@app.route('/upload', methods=['GET', 'POST'])
@login_required
def upload():
    if request.method == 'GET':
        return page('Upload', '<form method="post" enctype="multipart/form-data">'
                              '<input type="file" name="file"><button>Upload</button></form>')
    uploaded = request.files.get('file')
    if uploaded is None or not uploaded.filename:
        return jsonify(error='no file'), 400
    name = secure_filename(uploaded.filename)
    digest = hashlib.sha256()
    size = 0
    with open(os.path.join(DATA, name), 'wb') as out:
        while True:
            block = uploaded.stream.read(1 << 16)
            if not block:
                break
            digest.update(block)
            size += len(block)
            out.write(block)
    return jsonify(name=name, size=size, sha256=digest.hexdigest(),
                   description=request.form.get('description', ''),
                   url=url_for('download', name=name)), 201


@app.route('/files/<name>')
@login_required
def download(name):
    path = os.path.join(DATA, secure_filename(name))
    if not os.path.isfile(path):
        abort(404)
    return send_file(path, mimetype='application/octet-stream', as_attachment=True, download_name=name)


@app.route('/export.csv')
def export_csv():
    rows = int(request.args.get('rows', '1000'))

    def generate():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(['id', 'name', 'square'])
        for i in range(1, rows + 1):
            writer.writerow([i, 'row "%d", with comma' % i, i * i])
            if i % 100 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
    return Response(stream_with_context(generate()), mimetype='text/csv',
                    headers={'Content-Disposition': 'attachment; filename=export.csv'})


@app.route('/api/items', methods=['GET', 'POST'])
def api_items():
    if request.method == 'POST':
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or not isinstance(data.get('name'), str):
            return jsonify(error='expected {"name": str, ...}'), 400
        with _lock:
            item_id = _next_item[0]
            _next_item[0] += 1
            item = {'id': item_id, 'name': data['name'], 'tags': list(data.get('tags', []))}
            _items[item_id] = item
        response = jsonify(item)
        response.status_code = 201
        response.headers['Location'] = url_for('api_item', item_id=item_id)
        return response
    with _lock:
        return jsonify(items=[_items[k] for k in sorted(_items)])


@app.route('/api/items/<int:item_id>', methods=['GET', 'DELETE'])
def api_item(item_id):
    with _lock:
        item = _items.get(item_id)
        if item is None:
            return jsonify(error='no item %d' % item_id), 404
        if request.method == 'DELETE':
            del _items[item_id]
            return '', 204
    return jsonify(item)


@app.route('/old-home')
def old_home():
    return redirect(url_for('index'), code=301)


@app.route('/boom')
def boom():
    raise RuntimeError('the /boom route always fails (custom 500 page example)')


@app.errorhandler(404)
def not_found(error):
    return page('Not found', '<p id="missing">Nothing lives at %s.</p>' % escape(request.path), 404)


@app.errorhandler(500)
def server_error(error):
    return page('Server error', '<p id="oops">Something went wrong; it has been logged.</p>', 500)


if __name__ == '__main__':
    app.run()
