"""Served by ConfigFileTests: what a gunicorn configuration file changed, as the worker sees it."""
import json
import os
import sys


def app(environ, start_response):
    body = json.dumps({
        'pid': os.getpid(),
        'raw_env': os.environ.get('OSPREY_CONFIG_TEST'),
        'config_arguments_leaked': 'OSPREY_CONFIG_ARGUMENTS' in os.environ,
        'multiprocess': environ['wsgi.multiprocess'],
        'multithread': environ['wsgi.multithread'],
        'script_name': environ.get('SCRIPT_NAME'),
        'path': sys.path[:3],
    }).encode()
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]
