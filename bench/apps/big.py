"""80 KB (81920-byte) response body as a single bytes object in a list."""

BODY = b"x" * 81920
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return [BODY]
