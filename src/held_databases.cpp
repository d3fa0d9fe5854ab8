#include "bs_router/held_databases.hpp"

#include <sqlite3.h>

namespace bs_router {

namespace {

// SQLite counts every allocation under a global mutex unless told not to;
// the router never asks for those figures. Only possible before SQLite's
// first use in the process (later it is refused, and nothing changes).
void configure_sqlite_once() {
  static const bool configured = [] {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    return true;
  }();
  (void)configured;
}

} // namespace

held_databases::held_databases(std::chrono::milliseconds busy_timeout, std::size_t max_held)
    : busy_timeout_(busy_timeout), max_held_(max_held == 0 ? 1 : max_held) {
  configure_sqlite_once();
}

held_databases::~held_databases() { close_all(); }

held_databases::list::iterator held_databases::find(const std::string& path) {
  for (auto it = held_.begin(); it != held_.end(); ++it)
    if (it->path == path) return it;
  return held_.end();
}

void held_databases::close(list::iterator it) {
  // No statement is left open (each read finalizes its own), so this
  // closes at once.
  sqlite3_close_v2(it->db);
  held_.erase(it);
}

sqlite3* held_databases::get(const std::string& path, file_identity seen, int& error, std::string& message) {
  auto it = find(path);
  if (it != held_.end()) {
    if (it->identity == seen) {
      held_.splice(held_.begin(), held_, it);
      return it->db;
    }
    close(it); // the path names another file now
  }

  int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX;
#ifdef SQLITE_OPEN_NOFOLLOW
  flags |= SQLITE_OPEN_NOFOLLOW;
#endif
  sqlite3* db = nullptr;
  error = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (error != SQLITE_OK) {
    message = db ? sqlite3_errmsg(db) : sqlite3_errstr(error);
    sqlite3_close_v2(db);
    return nullptr;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(busy_timeout_.count()));

  if (held_.size() >= max_held_) close(std::prev(held_.end()));
  held_.push_front(held{path, seen, db});
  return db;
}

void held_databases::confirm(const std::string& path, file_identity seen, file_identity now) {
  if (seen == now) return;
  drop(path);
}

void held_databases::drop(const std::string& path) {
  auto it = find(path);
  if (it != held_.end()) close(it);
}

void held_databases::close_all() {
  while (!held_.empty()) close(held_.begin());
}

} // namespace bs_router
