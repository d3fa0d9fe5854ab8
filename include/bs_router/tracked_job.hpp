#pragma once
// A job as the router sees it from the moment it is taken until its final
// reply is out: its journal entry, the request decoded from it, and its
// phase, which the router sets in one place (router::move_to).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bs_router/job.hpp"
#include "bs_router/journal.hpp"

namespace bs_router {

enum class job_phase {
  unconfirmed,       // journaled; whether the broker holds it is not known yet
  holding,           // journaled; the broker is being asked to hold it
  waiting_for_jname, // behind the job of its jname
  waiting_for_slot,  // holds its jname, waits for one of max_jobs
  running,           // cbsd runs
  replying,          // its final reply is in the outbox
};

const char* to_string(job_phase phase);

struct tracked_job {
  journal_entry entry;
  std::optional<job_request> request; // none for a refused job
  std::string jname; // empty: no jname, runs without waiting for another job
  job_phase phase = job_phase::holding;
  // The scheduler gave it a slot while the broker was still being asked to
  // hold it: it starts once held.
  bool slot_granted = false;
  std::uint64_t broker_life = 0;      // reply_sink::life() when it was taken
  std::uint64_t journal_sequence = 0; // the append that recorded its latest state
  // The key of a signed job whose signature held: its replies are signed
  // with it. Empty: replies unsigned (an unsigned job, or a forged one).
  std::string reply_key_id;
  std::string live_output;  // output not yet sent as a progress reply
  bool live_queued = false; // in the outbox's progress queue
};

using job_ptr = std::shared_ptr<tracked_job>;

// "job 7 jcreate jname=jail1", for the log (the command is a plain name).
std::string describe_job(const tracked_job& job);

} // namespace bs_router
