"""App factories: `factory_app` (uses `application`), `factory_app:create_app()`,
`factory_app:create_app('prod', n=2)`. Each app echoes how it was made as JSON."""
import json


def _make(label, args, kwargs):
    body = json.dumps({'label': label, 'args': list(args), 'kwargs': kwargs},
                      sort_keys=True).encode()

    def app(environ, start_response):
        start_response('200 OK', [('Content-Type', 'application/json'),
                                  ('Content-Length', str(len(body)))])
        return [body]
    return app


def create_app(*args, **kwargs):
    return _make('create_app', args, kwargs)


application = _make('application', (), {})
