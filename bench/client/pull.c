/*
 * A download client that is not the bottleneck: wrk reads in small blocks and tops out near
 * 0.6 GB/s on this kind of machine, below what the servers can send. pull GETs / over one
 * keep-alive connection again and again for the given seconds (reconnecting when the server
 * closes it, as gunicorn sync and uWSGI do after every response), reading each body (it must
 * have a Content-Length) with 1 MiB recv calls and discarding it. bench/run.py runs it after
 * the wrk rows of the throughput scenario (file_wrapper) and reports the server's GB/s and
 * CPU-seconds per GB from it.
 *
 * usage: pull PORT SECONDS
 * prints: PULL_JSON {"responses": N, "bytes": B, "seconds": S}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pull PORT SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]);
    double seconds = atof(argv[2]);
    static char body[1 << 20];
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    int fd = -1;
    static const char request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    double start = now();
    long long total = 0;
    long responses = 0;
    long served_on_connection = 0;
    while (now() - start < seconds) {
        if (fd < 0) {
            served_on_connection = 0;
                fd = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
                perror("pull: connect");
                return 1;
            }
        }
        if (send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof request - 1)) {
            perror("pull: send");
            return 1;
        }
        char head[8192];
        size_t head_bytes = 0;
        char *end = NULL;
        while (!end) {
            ssize_t n = recv(fd, head + head_bytes, sizeof head - 1 - head_bytes, 0);
            if (n <= 0 && head_bytes == 0 && served_on_connection > 0) {
                break; /* closed after its last response without saying so: ask again on a new one */
            }
            if (n <= 0) {
                fprintf(stderr, "pull: connection closed in the response head\n");
                return 1;
            }
            head_bytes += (size_t)n;
            head[head_bytes] = 0;
            end = memmem(head, head_bytes, "\r\n\r\n", 4);
            if (!end && head_bytes == sizeof head - 1) {
                fprintf(stderr, "pull: response head too large\n");
                return 1;
            }
        }
        if (!end) {
            close(fd);
            fd = -1;
            continue;
        }
        if (strncmp(head, "HTTP/1.", 7) != 0 || strncmp(head + 8, " 200", 4) != 0) {
            fprintf(stderr, "pull: not a 200: %.40s\n", head);
            return 1;
        }
        char *length = strcasestr(head, "\r\ncontent-length:");
        if (!length || length > end) {
            fprintf(stderr, "pull: the response has no Content-Length\n");
            return 1;
        }
        long long want = atoll(length + 17);
        long long got = (long long)(head_bytes - (size_t)(end + 4 - head));
        while (got < want) {
            ssize_t n = recv(fd, body, sizeof body, 0);
            if (n <= 0) {
                fprintf(stderr, "pull: connection closed in the body\n");
                return 1;
            }
            got += n;
        }
        if (got != want) {
            fprintf(stderr, "pull: %lld bytes after a body of %lld\n", got - want, want);
            return 1;
        }
        total += got;
        responses++;
        served_on_connection++;
        char *close_header = strcasestr(head, "\r\nconnection: close");
        if ((close_header && close_header < end) || strncmp(head, "HTTP/1.0", 8) == 0) {
            close(fd);
            fd = -1;
        }
    }
    printf("PULL_JSON {\"responses\": %ld, \"bytes\": %lld, \"seconds\": %.3f}\n", responses, total, now() - start);
    return 0;
}
