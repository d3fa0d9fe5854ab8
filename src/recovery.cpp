#include "bs_router/recovery.hpp"

namespace bs_router {

recovery_step recovery_for(const journal_entry& entry, broker_standing standing) {
  if (standing != broker_standing::held) return recovery_step::drop;
  switch (entry.state) {
    case journal_state::accepted: return recovery_step::run;
    case journal_state::running: return recovery_step::answer_interrupted;
    case journal_state::finished: return entry.replied ? recovery_step::remove : recovery_step::put_reply;
  }
  return recovery_step::drop;
}

const char* to_string(recovery_step step) {
  switch (step) {
    case recovery_step::drop: return "drop";
    case recovery_step::run: return "run";
    case recovery_step::answer_interrupted: return "answer interrupted";
    case recovery_step::put_reply: return "put reply";
    case recovery_step::remove: return "remove";
  }
  return "?";
}

} // namespace bs_router
