/*
 * What the benchmark's C servers (floor.c, c_wsgi.c) share: sending a whole response and finding where
 * a request in the buffer ends. Only what the benchmark's requests need: the head ends at CRLF CRLF,
 * a body has Content-Length.
 */
#ifndef BENCH_FLOOR_HTTP1_H
#define BENCH_FLOOR_HTTP1_H

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define MAX_REQUEST (256 * 1024)

/* Sends everything; a full socket buffer (80 KB bodies) waits in poll, as a floor may. */
static inline int send_all(int fd, struct iovec *iov, int count)
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

/* 1 when buf holds a whole request (its head and body lengths set), 0 when more is needed, -1 when it
 * can never fit in MAX_REQUEST. */
static inline int find_request(const char *buf, size_t len, size_t *head_len, size_t *content_length)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) {
        return len < MAX_REQUEST ? 0 : -1;
    }
    *head_len = (size_t)(end - buf) + 4;
    *content_length = 0;
    for (const char *p = buf; p < end; p++) {
        if ((*p == '\n') && strncasecmp(p + 1, "content-length:", 15) == 0) {
            *content_length = strtoul(p + 16, NULL, 10);
            break;
        }
    }
    if (*head_len + *content_length > MAX_REQUEST) {
        return -1;
    }
    return len >= *head_len + *content_length;
}

#endif
