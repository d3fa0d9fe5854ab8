/* Stands in for cbsd in the benchmark: the cheapest process that behaves like a
   successful cbsd run, so the benchmark measures the router, not the command.
   Where its working directory (the pool) holds cbsd_stub.runs, each run adds
   one byte to it, so that the benchmark can count the runs per job; elsewhere
   that costs one failed open(). */
#include <fcntl.h>
#include <unistd.h>

int main(void) {
  static const char reply[] = "ok\n";
  const int runs = open("cbsd_stub.runs", O_WRONLY | O_APPEND | O_CLOEXEC);
  if (runs >= 0) {
    if (write(runs, "x", 1) != 1) return 1;
    close(runs);
  }
  return write(STDOUT_FILENO, reply, sizeof reply - 1) == (ssize_t)(sizeof reply - 1) ? 0 : 1;
}
