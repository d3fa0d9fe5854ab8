// Preloaded into beanstalkd (LD_PRELOAD) by beanstalkd_server when a test asks
// for a coarse clock: gettimeofday(2) then tells whole seconds only.
//
// Why: beanstalkd 1.12 keeps a reserved job past its TTR when its timer for
// the reserving connection fires in the very microsecond of the job's
// deadline (conn_timeout() in prot.c tests "deadline_at >= now", and then
// schedules that connection no more), until that connection speaks or
// closes. With a clock of whole seconds the timer always fires "in" the
// deadline's second, so a test sees deterministically what real brokers do
// now and then. Everything else in beanstalkd works as usual on it.

#include <sys/time.h>
#include <time.h>

extern "C" {

#ifdef __GLIBC__
int gettimeofday(struct timeval* __restrict tv, void* __restrict) noexcept {
#else
int gettimeofday(struct timeval* tv, struct timezone*) {
#endif
  struct timespec now;
  if (clock_gettime(CLOCK_REALTIME, &now) != 0) return -1;
  tv->tv_sec = now.tv_sec;
  tv->tv_usec = 0;
  return 0;
}

} // extern "C"
