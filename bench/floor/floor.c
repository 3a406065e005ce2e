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

#define MAX_REQUEST (256 * 1024)

struct connection {
    char *buf;
    size_t len;
};

static struct connection *connections[65536];

/* Sends everything; a full socket buffer (80 KB bodies) waits in poll, as a floor may. */
static int send_all(int fd, struct iovec *iov, int count)
{
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    while (msg.msg_iovlen > 0) {
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                poll(&p, 1, 1000);
                continue;
            }
            return -1;
        }
        while (n > 0 && msg.msg_iovlen > 0) {
            if ((size_t)n >= msg.msg_iov->iov_len) {
                n -= msg.msg_iov->iov_len;
                msg.msg_iov++;
                msg.msg_iovlen--;
            } else {
                msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
                msg.msg_iov->iov_len -= n;
                n = 0;
            }
        }
    }
    return 0;
}

/* Answers every complete request in the buffer; -1 when the connection must close. */
static int answer(int fd, struct connection *c, const char *body, size_t body_size)
{
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) {
            return c->len < MAX_REQUEST ? 0 : -1;
        }
        size_t head_len = (size_t)(end - c->buf) + 4;
        size_t content_length = 0;
        for (char *p = c->buf; p < end; p++) {
            if ((*p == '\n') && strncasecmp(p + 1, "content-length:", 15) == 0) {
                content_length = strtoul(p + 16, NULL, 10);
                break;
            }
        }
        if (head_len + content_length > MAX_REQUEST) {
            return -1;
        }
        if (c->len < head_len + content_length) {
            return 0;
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
