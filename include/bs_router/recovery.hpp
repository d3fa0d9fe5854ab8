#pragma once
// What becomes of a job of the journal once the broker has said where it
// stands (after a restart, or a hold whose answer was lost). Pure: the
// table below is the whole rule.
//
//   journal \ broker | held                   | not held, gone
//   -----------------+------------------------+----------------
//   accepted         | run it now             | drop the entry
//   running          | answer 1003 (unknown)  | drop the entry
//   finished         | put the recorded reply | drop the entry
//   finished+replied | remove it, then drop   | drop the entry
//
// Not held: the hold never happened, so cbsd never ran and the broker hands
// the job out again. Gone: nothing is left to answer.

#include "bs_router/broker.hpp"
#include "bs_router/journal.hpp"

namespace bs_router {

enum class recovery_step {
  drop,               // forget the entry
  run,                // schedule it: it had not started
  answer_interrupted, // reply ErrCode 1003: its outcome is unknown
  put_reply,          // the recorded reply goes out
  remove,             // answered already: remove the broker's job, then forget it
};

recovery_step recovery_for(const journal_entry& entry, broker_standing standing);

const char* to_string(recovery_step step);

} // namespace bs_router
