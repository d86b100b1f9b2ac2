/* The cluster tests' probe target: answers every connection on port 8080 with one HTTP response
 * naming the pod ("hello from <hostname>"), then closes it. Static, FROM scratch, non-root. */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_stop(int sig) { _exit(128 + sig); }

int main(void) {
  char host[256] = "unknown";
  char reply[512];
  char request[4096];
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(8080)};
  int one = 1;
  int listener = socket(AF_INET, SOCK_STREAM, 0);

  signal(SIGTERM, on_stop);
  signal(SIGPIPE, SIG_IGN);
  gethostname(host, sizeof host - 1);
  if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 64) < 0) {
    perror("hello: listen on :8080");
    return 1;
  }
  int body = snprintf(NULL, 0, "hello from %s\n", host);
  int length = snprintf(reply, sizeof reply,
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                        "Connection: close\r\n\r\nhello from %s\n",
                        body, host);
  printf("hello: listening on :8080 as %s\n", host);
  fflush(stdout);
  for (;;) {
    int connection = accept(listener, NULL, NULL);
    if (connection < 0) {
      continue;
    }
    (void)read(connection, request, sizeof request); /* the request itself does not matter */
    (void)write(connection, reply, (size_t)length);
    close(connection);
  }
}
