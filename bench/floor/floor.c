/*
 * The benchmark's floor: what one thread on epoll costs per request on this machine when it
 * does nothing but HTTP, with no Python and no parsing beyond finding the end of the head and
 * Content-Length. It answers every request with a fixed body of argv[2] bytes, or echoes the
 * request body when argv[2] is 0. Same syscalls per request as a keep-alive server can get
 * (one recv, one sendmsg), TCP_NODELAY like Osprey. Built and run by bench/run.py as the
 * "floor" server: no WSGI server can beat its requests per CPU-second, so it shows which
 * targets the kernel alone rules out.
 *
 * usage: floor PORT BODY_BYTES
 */
#define _GNU_SOURCE
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

struct connection {
    char *buf;
    size_t len;
};

static struct connection *connections[65536];

/* Answers every complete request in the buffer; -1 when the connection must close. */
static int answer(int fd, struct connection *c, const char *body, size_t body_size)
{
    for (;;) {
        size_t head_len, content_length;
        int found = find_request(c->buf, c->len, &head_len, &content_length);
        if (found <= 0) {
            return found;
        }
        size_t out_len = body_size ? body_size : content_length;
        char head[128];
        int h = snprintf(head, sizeof head,
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n", out_len);
        struct iovec iov[2] = {{head, (size_t)h}, {body_size ? (char *)body : c->buf + head_len, out_len}};
        if (send_all(fd, iov, out_len ? 2 : 1) < 0) {
            return -1;
        }
        memmove(c->buf, c->buf + head_len + content_length, c->len - head_len - content_length);
        c->len -= head_len + content_length;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floor PORT BODY_BYTES\n");
        return 2;
    }
    int port = atoi(argv[1]);
    size_t body_size = strtoul(argv[2], NULL, 10);
    char *body = malloc(body_size + 1);
    memset(body, 'x', body_size);
    if (body_size == 13) {
        memcpy(body, "Hello, World!", 13);
    }
    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 4096) < 0) {
        perror("floor: bind/listen");
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
                while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (client >= 65536) {
                        close(client);
                        continue;
                    }
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (!connections[client]) {
                        connections[client] = calloc(1, sizeof(struct connection));
                        connections[client]->buf = malloc(MAX_REQUEST);
                    }
                    connections[client]->len = 0;
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = client};
                    epoll_ctl(ep, EPOLL_CTL_ADD, client, &ce);
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
                if (r <= 0 || (c->len += (size_t)r, answer(fd, c, body, body_size) < 0)) {
                    close(fd);
                    break;
                }
                /* A short read drained the socket: no second recv just to see EAGAIN (epoll is
                 * level-triggered, so anything that arrives later is reported again). */
                if ((size_t)r < room) {
                    break;
                }
            }
        }
    }
}
