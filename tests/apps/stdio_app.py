"""Writes past sys.stdout and sys.stderr, and serves a plain file and a file-like object whose fileno()
and read() disagree (the --capture-output, --enable-stdio-inheritance and --no-sendfile tests)."""
import os
import subprocess


class DisagreeingFile:
    """fileno() is this module's file; read() gives other bytes: PEP 3333 wants what read() gives."""

    def __init__(self):
        self._file = open(__file__, "rb")
        self._read = False

    def fileno(self):
        return self._file.fileno()

    def read(self, size=-1):
        if self._read:
            return b""
        self._read = True
        return b"read through the file object\n"

    def close(self):
        self._file.close()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/descriptors":
        # Below Python's sys.stdout/sys.stderr (which go to the error log anyway): the descriptors
        # themselves, as C extensions write, and a child process that inherits them.
        os.write(1, b"written to fd 1\n")
        os.write(2, b"written to fd 2\n")
        subprocess.run(["sh", "-c", "echo child on stdout; echo child on stderr >&2"], check=True)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"written\n"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](DisagreeingFile())
    if path == "/plainfile":
        # No Content-Length: sent from the descriptor it gets the file's; iterated, it goes out chunked.
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
