#include "bs_router/tracked_job.hpp"

#include "bs_router/escape.hpp"

namespace bs_router {

const char* to_string(job_phase phase) {
  switch (phase) {
    case job_phase::unconfirmed: return "unconfirmed";
    case job_phase::holding: return "holding";
    case job_phase::waiting_for_jname: return "waiting for jname";
    case job_phase::waiting_for_slot: return "waiting for a slot";
    case job_phase::running: return "running";
    case job_phase::replying: return "replying";
  }
  return "?";
}

std::string describe_job(const tracked_job& job) {
  std::string s = "job " + loggable(job.entry.broker_id);
  if (job.request) {
    s += " " + job.request->command;
    if (job.request->jname) s += " jname=" + loggable(*job.request->jname);
  }
  return s;
}

} // namespace bs_router
