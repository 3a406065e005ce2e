"""A generator yielding 100 chunks of 1 KB; no Content-Length (server must chunk or close)."""

CHUNK = b"c" * 1024
COUNT = 100


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def gen():
        for _ in range(COUNT):
            yield CHUNK

    return gen()
