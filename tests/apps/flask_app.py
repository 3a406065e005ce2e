"""A Flask app (Debian's python3-flask): page, form POST, JSON, streamed response, send_file."""
import os

from flask import Flask, Response, jsonify, request, send_file, stream_with_context

HERE = os.path.dirname(os.path.abspath(__file__))
app = Flask(__name__)


@app.route('/')
def index():
    return '<h1>Hello from Flask</h1>'


@app.route('/form', methods=['POST'])
def form():
    return 'name=%s;n=%s' % (request.form['name'], request.form['n'])


@app.route('/json')
def json_view():
    return jsonify(message='hi', numbers=[1, 2, 3], path=request.path)


@app.route('/json_echo', methods=['POST'])
def json_echo():
    return jsonify(received=request.get_json())


@app.route('/stream')
def stream():
    def generate():
        for i in range(3):
            yield 'part%d;%s\n' % (i, request.args.get('tag', ''))
    return Response(stream_with_context(generate()), mimetype='text/plain')


@app.route('/file')
def file_view():
    return send_file(os.path.join(HERE, 'static', 'hello.txt'), mimetype='text/plain')
