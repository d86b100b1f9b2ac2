/* The pod sandbox's process for the one-node test cluster (containerd's sandbox_image):
 * it holds the pod's namespaces open, reaps orphaned children (it is PID 1 of a pod that
 * shares its PID namespace) and exits on SIGINT or SIGTERM. registry.k8s.io/pause cannot be
 * pulled here, so the test bed builds this one, statically linked, FROM scratch. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { _exit(128 + sig); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
