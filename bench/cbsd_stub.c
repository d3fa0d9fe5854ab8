/* Stands in for cbsd in the benchmark: the cheapest process that behaves like a
   successful cbsd run, so the benchmark measures the router, not the command.
   Where its working directory (the pool) holds cbsd_stub.runs, each run adds
   one byte to it, so that the benchmark can count the runs per job. Where it
   holds cbsd_stub.cpu_ms (bench_router --stub-cpu-ms N), each run first burns
   that many milliseconds of CPU, as real cbsd's start-up (a shell loading its
   environment) does. Where neither is there, each costs one failed open(),
   in the baselines and the router's runs alike. */
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long cpu_ms_wanted(void) {
  char text[16] = {0};
  const int fd = open("cbsd_stub.cpu_ms", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const ssize_t n = read(fd, text, sizeof text - 1);
  close(fd);
  return n > 0 ? strtol(text, NULL, 10) : 0;
}

static void burn_cpu(long ms) {
  struct timespec now;
  for (;;) {
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now) != 0) return;
    if (now.tv_sec * 1000 + now.tv_nsec / 1000000 >= ms) return;
  }
}

int main(void) {
  static const char reply[] = "ok\n";
  const long cpu_ms = cpu_ms_wanted();
  if (cpu_ms > 0) burn_cpu(cpu_ms);
  const int runs = open("cbsd_stub.runs", O_WRONLY | O_APPEND | O_CLOEXEC);
  if (runs >= 0) {
    if (write(runs, "x", 1) != 1) return 1;
    close(runs);
  }
  return write(STDOUT_FILENO, reply, sizeof reply - 1) == (ssize_t)(sizeof reply - 1) ? 0 : 1;
}
