#include "bs_router/posix_io.hpp"

#include <system_error>

namespace bs_router {

void throw_errno(int error, const std::string& what) { throw std::system_error(error, std::generic_category(), what); }

} // namespace bs_router
