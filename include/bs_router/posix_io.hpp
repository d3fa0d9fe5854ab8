#pragma once
// The two things every file of ours does with POSIX calls: turn a failed
// call's errno into an exception that names what failed, and write a whole
// buffer (write(2) may write less than asked, or be interrupted).

#include <cerrno>
#include <cstddef>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <unistd.h>

namespace bs_router {

// Throws std::system_error(error, generic_category, what).
[[noreturn]] void throw_errno(int error, const std::string& what);

// Writes all of `data` with `write_some(bytes, size, done)`, a write(2)-like
// call for the bytes from offset `done` on, retrying EINTR: 0 once all is
// written, else the errno of the failed call (what got written before it
// stays written). No allocation: safe on every path.
template <class WriteSome>
int write_fully(std::string_view data, WriteSome&& write_some) noexcept {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write_some(data.data() + done, data.size() - done, done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

// write_fully with write(2) on `fd`.
inline int write_all(int fd, std::string_view data) noexcept {
  return write_fully(data, [fd](const char* bytes, std::size_t size, std::size_t) { return ::write(fd, bytes, size); });
}

} // namespace bs_router
