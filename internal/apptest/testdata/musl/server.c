/* A small HTTP server linked against musl: it listens on every address
 * "localhost" resolves to (musl reads /etc/hosts), answers each request
 * and logs it on stdout. */
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	const char *port = argc > 1 ? argv[1] : "8081";
	struct addrinfo hints = {0}, *res, *ai;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	int err = getaddrinfo("localhost", port, &hints, &res);
	if (err) {
		fprintf(stderr, "server: localhost: %s\n", gai_strerror(err));
		return 1;
	}
	struct pollfd fds[8];
	int n = 0;
	for (ai = res; ai && n < 8; ai = ai->ai_next) {
		int s = socket(ai->ai_family, ai->ai_socktype, 0), one = 1;
		if (s < 0) continue;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ai->ai_family == AF_INET6) setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		if (bind(s, ai->ai_addr, ai->ai_addrlen) || listen(s, 16)) {
			perror("server: bind");
			close(s);
			continue;
		}
		fds[n].fd = s;
		fds[n++].events = POLLIN;
	}
	if (n == 0) return 1;
	printf("listening on localhost:%s (%d addresses)\n", port, n);
	fflush(stdout);
	for (unsigned long count = 1;; count++) {
		if (poll(fds, n, -1) < 0) return 1;
		for (int i = 0; i < n; i++) {
			if (!(fds[i].revents & POLLIN)) continue;
			int c = accept(fds[i].fd, 0, 0);
			if (c < 0) continue;
			char buf[4096];
			read(c, buf, sizeof buf);
			char body[128];
			int len = snprintf(body, sizeof body, "hello from musl (uid %d)\n", (int)getuid());
			dprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len, body);
			close(c);
			printf("request %lu\n", count);
			fflush(stdout);
		}
	}
}
