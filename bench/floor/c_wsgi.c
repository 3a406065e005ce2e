/*
 * A C WSGI server as lean as bjoern's or FastWSGI's, for the benchmark's "c-wsgi" row: what a server
 * written in C that calls a Python application costs per request on this machine. Neither C server
 * has a Debian package (PyPI is not reachable here), so this stands in for them: one epoll thread
 * (bench/floor/floor.c's loop, the same syscalls per request), CPython embedded, environ copied
 * from a template dict with interned keys and the per-request values set from the parsed head,
 * start_response in C, the body iterated without copies and sent with one sendmsg.
 *
 * It is a measuring instrument, not a server: the head is split on CRLF with no validation beyond
 * what the benchmark's requests need, bodies need Content-Length, a response is written whole
 * (waiting in poll when the socket is full), and write() from start_response is not offered.
 *
 * usage: c_wsgi PORT MODULE:APP   (run in the directory that holds MODULE)
 * build: cc -O2 c_wsgi.c $(python3-config --cflags --embed) $(python3-config --ldflags --embed)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "http1.h"

#define MAX_IOV 512

struct connection {
    char *buf;
    size_t len;
    PyObject *remote_addr;
};

static struct connection *connections[65536];

static PyObject *application, *start_response, *environ_template, *bytes_io;
static PyObject *status_line, *response_headers; /* set by start_response for the current request */
static PyObject *k_method, *k_path, *k_query, *k_protocol, *k_content_type, *k_content_length, *k_remote_addr,
    *k_input, *s_close;

static PyObject *start_response_impl(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *status, *headers, *exc_info = NULL;
    if (!PyArg_ParseTuple(args, "UO!|O", &status, &PyList_Type, &headers, &exc_info)) {
        return NULL;
    }
    if (status_line && (exc_info == NULL || exc_info == Py_None)) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called twice without exc_info");
        return NULL;
    }
    Py_XSETREF(status_line, Py_NewRef(status));
    Py_XSETREF(response_headers, Py_NewRef(headers));
    Py_RETURN_NONE;
}

static PyMethodDef start_response_def = {"start_response", start_response_impl, METH_VARARGS, NULL};

static int set_latin1(PyObject *environ, PyObject *key, const char *value, size_t length)
{
    PyObject *v = PyUnicode_DecodeLatin1(value, (Py_ssize_t)length, NULL);
    int rc = v ? PyDict_SetItem(environ, key, v) : -1;
    Py_XDECREF(v);
    return rc;
}

/* PATH_INFO is the target's path with %XX decoded, as bytes taken as latin-1 (PEP 3333). */
static int set_path(PyObject *environ, const char *path, size_t length)
{
    char decoded[8192];
    size_t out = 0;
    for (size_t i = 0; i < length && out < sizeof decoded; i++) {
        char c = path[i];
        if (c == '%' && i + 2 < length) {
            char hex[3] = {path[i + 1], path[i + 2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (end == hex + 2) {
                decoded[out++] = (char)v;
                i += 2;
                continue;
            }
        }
        decoded[out++] = c;
    }
    return set_latin1(environ, k_path, decoded, out);
}

/* HTTP_ + the name upper-cased with - as _; a repeated header is joined with ", ". */
static int set_header(PyObject *environ, const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (name_len == 12 && strncasecmp(name, "content-type", 12) == 0) {
        return set_latin1(environ, k_content_type, value, value_len);
    }
    if (name_len == 14 && strncasecmp(name, "content-length", 14) == 0) {
        return set_latin1(environ, k_content_length, value, value_len);
    }
    char key[256] = "HTTP_";
    if (name_len > sizeof key - 6) {
        return 0;
    }
    for (size_t i = 0; i < name_len; i++) {
        char c = name[i];
        key[5 + i] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    PyObject *k = PyUnicode_FromStringAndSize(key, (Py_ssize_t)(5 + name_len));
    if (!k) {
        return -1;
    }
    PyUnicode_InternInPlace(&k);
    PyObject *v = PyUnicode_DecodeLatin1(value, (Py_ssize_t)value_len, NULL);
    PyObject *old = v ? PyDict_GetItemWithError(environ, k) : NULL;
    if (old) {
        PyObject *joined = PyUnicode_FromFormat("%U, %U", old, v);
        Py_SETREF(v, joined);
    }
    int rc = v ? PyDict_SetItem(environ, k, v) : -1;
    Py_XDECREF(v);
    Py_DECREF(k);
    return rc;
}

static PyObject *build_environ(struct connection *c, const char *head, size_t head_len, const char *body,
                               size_t body_len)
{
    PyObject *environ = PyDict_Copy(environ_template);
    if (!environ) {
        return NULL;
    }
    const char *end = head + head_len - 4;
    const char *line_end = memmem(head, head_len, "\r\n", 2);
    const char *sp1 = memchr(head, ' ', (size_t)(line_end - head));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (!sp2) {
        Py_DECREF(environ);
        return NULL;
    }
    const char *target = sp1 + 1;
    const char *query = memchr(target, '?', (size_t)(sp2 - target));
    if (set_latin1(environ, k_method, head, (size_t)(sp1 - head)) < 0 ||
        set_path(environ, target, (size_t)((query ? query : sp2) - target)) < 0 ||
        set_latin1(environ, k_query, query ? query + 1 : "", query ? (size_t)(sp2 - query - 1) : 0) < 0 ||
        set_latin1(environ, k_protocol, sp2 + 1, (size_t)(line_end - sp2 - 1)) < 0 ||
        PyDict_SetItem(environ, k_remote_addr, c->remote_addr) < 0) {
        Py_DECREF(environ);
        return NULL;
    }
    for (const char *p = line_end + 2; p < end;) {
        const char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            const char *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
                ve--;
            }
            if (set_header(environ, p, (size_t)(colon - p), v, (size_t)(ve - v)) < 0) {
                Py_DECREF(environ);
                return NULL;
            }
        }
        p = eol + 2;
    }
    PyObject *bytes = PyBytes_FromStringAndSize(body, (Py_ssize_t)body_len);
    PyObject *input = bytes ? PyObject_CallOneArg(bytes_io, bytes) : NULL;
    Py_XDECREF(bytes);
    if (!input || PyDict_SetItem(environ, k_input, input) < 0) {
        Py_XDECREF(input);
        Py_DECREF(environ);
        return NULL;
    }
    Py_DECREF(input);
    return environ;
}

static const char internal_error[] =
    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\r\n"
    "Internal Server Error";

/* Calls the application and sends its response; -1 when the connection must close. */
static int respond(int fd, struct connection *c, const char *head, size_t head_len, const char *body,
                   size_t body_len)
{
    PyObject *environ = build_environ(c, head, head_len, body, body_len);
    PyObject *result = environ ? PyObject_CallFunctionObjArgs(application, environ, start_response, NULL) : NULL;
    Py_XDECREF(environ);
    PyObject *chunks[MAX_IOV];
    int nchunks = 0;
    int failed = result == NULL;
    if (result) {
        if (PyList_CheckExact(result) && PyList_GET_SIZE(result) <= MAX_IOV - 4) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(result); i++) {
                chunks[nchunks++] = Py_NewRef(PyList_GET_ITEM(result, i));
            }
        } else {
            PyObject *it = PyObject_GetIter(result), *item;
            while (it && (item = PyIter_Next(it)) != NULL) {
                if (nchunks == MAX_IOV - 4) {
                    Py_DECREF(item);
                    failed = 1;
                    break;
                }
                chunks[nchunks++] = item;
            }
            failed |= it == NULL || PyErr_Occurred() != NULL;
            Py_XDECREF(it);
        }
        if (PyObject_HasAttr(result, s_close)) {
            PyObject *r = PyObject_CallMethodNoArgs(result, s_close);
            failed |= r == NULL;
            Py_XDECREF(r);
        }
        Py_DECREF(result);
    }
    size_t total = 0;
    for (int i = 0; i < nchunks && !failed; i++) {
        failed |= !PyBytes_Check(chunks[i]);
        total += failed ? 0 : (size_t)PyBytes_GET_SIZE(chunks[i]);
    }
    char out_head[8192];
    size_t h = 0;
    int has_length = 0;
    if (!failed && status_line) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(status_line, &n);
        h = (size_t)snprintf(out_head, sizeof out_head, "HTTP/1.1 %.*s\r\n", (int)n, s);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(response_headers) && h < sizeof out_head - 512; i++) {
            PyObject *pair = PyList_GET_ITEM(response_headers, i);
            Py_ssize_t nn, vn;
            const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &nn);
            const char *value = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &vn);
            has_length |= nn == 14 && strncasecmp(name, "content-length", 14) == 0;
            h += (size_t)snprintf(out_head + h, sizeof out_head - h, "%.*s: %.*s\r\n", (int)nn, name, (int)vn, value);
        }
        if (!has_length) {
            h += (size_t)snprintf(out_head + h, sizeof out_head - h, "Content-Length: %zu\r\n", total);
        }
        h += (size_t)snprintf(out_head + h, sizeof out_head - h, "\r\n");
    }
    int rc;
    if (failed || !status_line) {
        PyErr_Print();
        struct iovec iov = {(void *)internal_error, sizeof internal_error - 1};
        rc = send_all(fd, &iov, 1);
    } else {
        struct iovec iov[MAX_IOV];
        iov[0].iov_base = out_head;
        iov[0].iov_len = h;
        int count = 1;
        for (int i = 0; i < nchunks; i++) {
            /* An empty entry would be left over by send_all's accounting and sent forever. */
            if (PyBytes_GET_SIZE(chunks[i]) > 0) {
                iov[count].iov_base = PyBytes_AS_STRING(chunks[i]);
                iov[count++].iov_len = (size_t)PyBytes_GET_SIZE(chunks[i]);
            }
        }
        rc = send_all(fd, iov, count);
    }
    for (int i = 0; i < nchunks; i++) {
        Py_DECREF(chunks[i]);
    }
    Py_CLEAR(status_line);
    Py_CLEAR(response_headers);
    return rc;
}

/* Answers every complete request in the buffer; -1 when the connection must close. */
static int answer(int fd, struct connection *c)
{
    for (;;) {
        size_t head_len, content_length;
        int found = find_request(c->buf, c->len, &head_len, &content_length);
        if (found <= 0) {
            return found;
        }
        if (respond(fd, c, c->buf, head_len, c->buf + head_len, content_length) < 0) {
            return -1;
        }
        memmove(c->buf, c->buf + head_len + content_length, c->len - head_len - content_length);
        c->len -= head_len + content_length;
    }
}

static PyObject *intern(const char *s)
{
    return PyUnicode_InternFromString(s);
}

static int load(const char *spec, int port)
{
    char module[256];
    const char *colon = strchr(spec, ':');
    snprintf(module, sizeof module, "%.*s", colon ? (int)(colon - spec) : (int)strlen(spec), spec);
    PyObject *sys_path = PySys_GetObject("path");
    PyObject *cwd = PyUnicode_FromString(".");
    PyList_Insert(sys_path, 0, cwd);
    Py_DECREF(cwd);
    PyObject *mod = PyImport_ImportModule(module);
    application = mod ? PyObject_GetAttrString(mod, colon ? colon + 1 : "application") : NULL;
    PyObject *io = PyImport_ImportModule("io");
    bytes_io = io ? PyObject_GetAttrString(io, "BytesIO") : NULL;
    if (!application || !bytes_io) {
        PyErr_Print();
        return -1;
    }
    start_response = PyCFunction_New(&start_response_def, NULL);
    k_method = intern("REQUEST_METHOD");
    k_path = intern("PATH_INFO");
    k_query = intern("QUERY_STRING");
    k_protocol = intern("SERVER_PROTOCOL");
    k_content_type = intern("CONTENT_TYPE");
    k_content_length = intern("CONTENT_LENGTH");
    k_remote_addr = intern("REMOTE_ADDR");
    k_input = intern("wsgi.input");
    s_close = intern("close");
    environ_template = PyDict_New();
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    PyObject *errors = PySys_GetObject("stderr");
    PyObject *version = Py_BuildValue("(ii)", 1, 0);
    PyDict_SetItemString(environ_template, "SCRIPT_NAME", PyUnicode_FromString(""));
    PyDict_SetItemString(environ_template, "SERVER_NAME", PyUnicode_FromString("127.0.0.1"));
    PyDict_SetItemString(environ_template, "SERVER_PORT", PyUnicode_FromString(port_text));
    PyDict_SetItemString(environ_template, "wsgi.version", version);
    PyDict_SetItemString(environ_template, "wsgi.url_scheme", PyUnicode_FromString("http"));
    PyDict_SetItemString(environ_template, "wsgi.errors", errors);
    PyDict_SetItemString(environ_template, "wsgi.multithread", Py_False);
    PyDict_SetItemString(environ_template, "wsgi.multiprocess", Py_False);
    PyDict_SetItemString(environ_template, "wsgi.run_once", Py_False);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: c_wsgi PORT MODULE:APP\n");
        return 2;
    }
    int port = atoi(argv[1]);
    Py_Initialize();
    if (load(argv[2], port) < 0) {
        return 1;
    }
    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 4096) < 0) {
        perror("c_wsgi: bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &event);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int client;
                struct sockaddr_in peer;
                socklen_t peer_len = sizeof peer;
                while ((client = accept4(listener, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK)) >= 0) {
                    if (client >= 65536) {
                        close(client);
                        continue;
                    }
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (!connections[client]) {
                        connections[client] = calloc(1, sizeof(struct connection));
                        connections[client]->buf = malloc(MAX_REQUEST);
                    }
                    char text[INET_ADDRSTRLEN];
                    inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
                    Py_XSETREF(connections[client]->remote_addr, PyUnicode_FromString(text));
                    connections[client]->len = 0;
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = client};
                    epoll_ctl(ep, EPOLL_CTL_ADD, client, &ce);
                    peer_len = sizeof peer;
                }
                continue;
            }
            struct connection *c = connections[fd];
            for (;;) {
                size_t room = MAX_REQUEST - c->len;
                ssize_t r = recv(fd, c->buf + c->len, room, 0);
                if (r < 0 && errno == EAGAIN) {
                    break;
                }
                if (r <= 0 || (c->len += (size_t)r, answer(fd, c) < 0)) {
                    close(fd);
                    break;
                }
                if ((size_t)r < room) {
                    break;
                }
            }
        }
    }
}
