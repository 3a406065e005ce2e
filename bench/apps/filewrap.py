"""Serves a large file through wsgi.file_wrapper (blocks of 64 KB), Content-Length set.

The file path comes from $BENCH_FILE; the default is bench/results/raw/100mb.bin,
which bench/run.py creates (100 MiB).
"""

import os

PATH = os.environ.get(
    "BENCH_FILE",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results", "raw", "100mb.bin"),
)
BLOCK = 65536


def app(environ, start_response):
    f = open(PATH, "rb")
    size = os.fstat(f.fileno()).st_size
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, BLOCK)

    def gen():  # fallback for servers without wsgi.file_wrapper
        try:
            while True:
                data = f.read(BLOCK)
                if not data:
                    return
                yield data
        finally:
            f.close()

    return gen()
