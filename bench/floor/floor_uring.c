/*
 * The floor again, on io_uring instead of epoll: the same answers as floor.c (a fixed body of
 * argv[2] bytes, or the request body echoed when argv[2] is 0), but a whole batch of sends and
 * receives for all connections goes to the kernel in one io_uring_enter, and the ring runs its
 * completions only when the loop asks for them (DEFER_TASKRUN). It answers one question: would
 * an io_uring engine lift the ceiling that the epoll floor shows? Built by bench/run.py as the
 * "floor-uring" server when liburing's header is installed (bench/setup.sh installs it).
 *
 * Each connection has one operation in flight: a receive, or a send linked to the next receive,
 * so a request costs one submission entry each way and no syscall of its own.
 *
 * usage: floor_uring PORT BODY_BYTES
 */
#define _GNU_SOURCE
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REQUEST (256 * 1024)
#define MAX_FD 65536

enum operation { OP_ACCEPT = 1, OP_RECV, OP_SEND };

struct connection {
    char *buf;
    size_t start; /* first byte not yet answered */
    size_t len;   /* end of the bytes received */
    char head[128];
    struct iovec iov[2];
    struct msghdr msg;
    size_t answered; /* bytes of buf the response in flight answers */
};

static struct connection *connections[MAX_FD];
static struct io_uring ring;
static const char *body;
static size_t body_size;
static int listener;

static struct io_uring_sqe *next_sqe(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static unsigned long long tag(enum operation op, int fd)
{
    return ((unsigned long long)op << 32) | (unsigned)fd;
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_multishot_accept(sqe, listener, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, tag(OP_ACCEPT, listener));
}

static void prep_recv(int fd, struct connection *c)
{
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_recv(sqe, fd, c->buf + c->len, MAX_REQUEST - c->len, 0);
    io_uring_sqe_set_data64(sqe, tag(OP_RECV, fd));
}

/* Sends what is left of the response, and receives the next request once it is out. */
static void prep_send(int fd, struct connection *c)
{
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_sendmsg(sqe, fd, &c->msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(OP_SEND, fd));
    sqe->flags |= IOSQE_IO_LINK;
    prep_recv(fd, c);
}

/* Answers the next complete request, or receives more; -1 when the request is too large. */
static int answer_or_receive(int fd, struct connection *c)
{
    char *data = c->buf + c->start;
    size_t available = c->len - c->start;
    char *end = memmem(data, available, "\r\n\r\n", 4);
    size_t head_len = end ? (size_t)(end - data) + 4 : 0;
    size_t content_length = 0;
    for (char *p = data; end && p < end; p++) {
        if (*p == '\n' && strncasecmp(p + 1, "content-length:", 15) == 0) {
            content_length = strtoul(p + 16, NULL, 10);
            break;
        }
    }
    if (!end || available < head_len + content_length) {
        if (head_len + content_length > MAX_REQUEST || (!end && c->len == MAX_REQUEST && c->start == 0)) {
            return -1;
        }
        if (c->len == MAX_REQUEST) {
            memmove(c->buf, data, available);
            c->start = 0;
            c->len = available;
        }
        prep_recv(fd, c);
        return 0;
    }
    size_t out_len = body_size ? body_size : content_length;
    int h = snprintf(c->head, sizeof c->head,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n", out_len);
    c->iov[0] = (struct iovec){c->head, (size_t)h};
    c->iov[1] = (struct iovec){body_size ? (char *)body : data + head_len, out_len};
    c->msg = (struct msghdr){.msg_iov = c->iov, .msg_iovlen = out_len ? 2 : 1};
    c->answered = head_len + content_length;
    prep_send(fd, c);
    return 0;
}

static void on_accept(int fd)
{
    int one = 1;
    if (fd >= MAX_FD) {
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!connections[fd]) {
        connections[fd] = calloc(1, sizeof(struct connection));
        connections[fd]->buf = malloc(MAX_REQUEST);
    }
    connections[fd]->start = connections[fd]->len = 0;
    prep_recv(fd, connections[fd]);
}

static void on_recv(int fd, int result)
{
    struct connection *c = connections[fd];
    if (result == -ECANCELED) {
        return; /* its send was short and goes on; that send links a new receive */
    }
    if (result <= 0) {
        close(fd);
        return;
    }
    c->len += (size_t)result;
    if (c->start > 0 && c->start == c->len - (size_t)result) {
        /* Everything before this read is answered: move the new bytes to the front (no receive is in flight). */
        memmove(c->buf, c->buf + c->start, (size_t)result);
        c->start = 0;
        c->len = (size_t)result;
    }
    if (answer_or_receive(fd, c) < 0) {
        close(fd);
    }
}

static void on_send(int fd, int result)
{
    struct connection *c = connections[fd];
    if (result < 0) {
        close(fd); /* the linked receive completes as cancelled */
        return;
    }
    size_t sent = (size_t)result;
    while (sent > 0 && c->msg.msg_iovlen > 0) {
        if (sent >= c->msg.msg_iov->iov_len) {
            sent -= c->msg.msg_iov->iov_len;
            c->msg.msg_iov++;
            c->msg.msg_iovlen--;
        } else {
            c->msg.msg_iov->iov_base = (char *)c->msg.msg_iov->iov_base + sent;
            c->msg.msg_iov->iov_len -= sent;
            sent = 0;
        }
    }
    if (c->msg.msg_iovlen > 0) {
        prep_send(fd, c); /* short send: the linked receive was cancelled */
        return;
    }
    c->start += c->answered;
    c->answered = 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floor_uring PORT BODY_BYTES\n");
        return 2;
    }
    int port = atoi(argv[1]);
    body_size = strtoul(argv[2], NULL, 10);
    char *fixed = malloc(body_size + 1);
    memset(fixed, 'x', body_size);
    if (body_size == 13) {
        memcpy(fixed, "Hello, World!", 13);
    }
    body = fixed;
    int one = 1;
    listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 4096) < 0) {
        perror("floor_uring: bind/listen");
        return 1;
    }
    struct io_uring_params params = {0};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN;
    int error = io_uring_queue_init_params(4096, &ring, &params);
    if (error < 0) {
        fprintf(stderr, "floor_uring: io_uring_setup: %s\n", strerror(-error));
        return 1;
    }
    arm_accept();
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head;
        unsigned seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            seen++;
            int op = (int)(cqe->user_data >> 32);
            int fd = (int)(cqe->user_data & 0xffffffffu);
            if (op == OP_ACCEPT) {
                if (cqe->res >= 0) {
                    on_accept(cqe->res);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    arm_accept();
                }
            } else if (op == OP_RECV) {
                on_recv(fd, cqe->res);
            } else {
                on_send(fd, cqe->res);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
