"""Has no `app` attribute (nor `application`)."""


def something_else(environ, start_response):
    start_response('200 OK', [])
    return [b'not the app']
