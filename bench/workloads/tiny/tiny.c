/* A tiny HTTP workload for bench/scale.py: answers 200 to anything on $PORT, ~100 KB RSS. */
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    const char *port = getenv("PORT");
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a;
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    char buf[4096];
    signal(SIGPIPE, SIG_IGN);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)atoi(port ? port : "8000"));
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) return 1;
    for (;;) {
        int c = accept(s, 0, 0);
        if (c < 0) continue;
        if (read(c, buf, sizeof buf) > 0) (void)!write(c, ok, sizeof ok - 1);
        close(c);
    }
}
