/* UDP for the QEMU boot test's guest (busybox's nc has no UDP here), built static.
 *
 *   vnt-udp send ADDR PORT MSG...   one datagram per MSG to ADDR:PORT
 *   vnt-udp self PORT MSG           MSG to 127.0.0.1:PORT from a socket bound there; prints
 *                                   "rx LEN HEX" of what the receiving socket got
 *   vnt-udp recv PORT               one datagram to 0.0.0.0:PORT (20 s at most); prints "rx LEN HEX"
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static struct sockaddr_in addr(const char *ip, const char *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};

	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", ip);
		exit(2);
	}
	return a;
}

int main(int argc, char **argv)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	if (s < 0) {
		perror("socket");
		return 1;
	}
	if (argc >= 5 && !strcmp(argv[1], "send")) {
		struct sockaddr_in a = addr(argv[2], argv[3]);

		for (int i = 4; i < argc; i++)
			if (sendto(s, argv[i], strlen(argv[i]), 0, (struct sockaddr *)&a, sizeof(a)) < 0) {
				perror("sendto");
				return 1;
			}
		return 0;
	}
	if ((argc == 4 && !strcmp(argv[1], "self")) || (argc == 3 && !strcmp(argv[1], "recv"))) {
		int self = argc == 4;
		struct sockaddr_in a = addr(self ? "127.0.0.1" : "0.0.0.0", argv[2]);
		struct timeval tv = {.tv_sec = self ? 5 : 20};
		unsigned char buf[2048];
		ssize_t n;

		if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
			perror("bind");
			return 1;
		}
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (self && sendto(s, argv[3], strlen(argv[3]), 0, (struct sockaddr *)&a, sizeof(a)) < 0) {
			perror("sendto");
			return 1;
		}
		n = recv(s, buf, sizeof(buf), 0);
		if (n < 0) {
			perror("recv");
			return 1;
		}
		printf("rx %zd ", n);
		for (ssize_t i = 0; i < n; i++)
			printf("%02x", buf[i]);
		printf("\n");
		return 0;
	}
	fprintf(stderr, "usage: vnt-udp send ADDR PORT MSG... | self PORT MSG | recv PORT\n");
	return 2;
}
