#include "bs_router/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

namespace bs_router {

namespace {

double seconds_since_epoch_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// Sample values as the format spells them: shortest exact decimal, or
// +Inf/-Inf/NaN.
void append_value(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else {
    char digits[32];
    auto result = std::to_chars(digits, digits + sizeof digits, value);
    out.append(digits, result.ptr);
  }
}

void append_value(std::string& out, std::uint64_t value) {
  char digits[24];
  auto result = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, result.ptr);
}

// Label values escape backslash, double quote and newline.
void append_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
}

void append_header(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

template <typename Value>
void append_sample(std::string& out, std::string_view name, Value value) {
  out += name;
  out += ' ';
  append_value(out, value);
  out += '\n';
}

template <typename Value>
void append_sample(std::string& out, std::string_view name, std::string_view label,
                   std::string_view label_value, Value value) {
  out += name;
  out += '{';
  out += label;
  out += "=\"";
  append_label_value(out, label_value);
  out += "\"} ";
  append_value(out, value);
  out += '\n';
}

} // namespace

metrics::metrics() : metrics(BS_ROUTER_VERSION, seconds_since_epoch_now()) {}

metrics::metrics(std::string version, double start_time_seconds)
    : version_(std::move(version)), start_time_seconds_(start_time_seconds) {}

void metrics::job_finished(std::string_view outcome, double seconds) {
  auto found = std::find(outcomes.begin(), outcomes.end(), outcome);
  if (found == outcomes.end())
    throw std::invalid_argument("metrics: unknown job outcome \"" + std::string(outcome) + "\"");
  ++jobs_by_outcome_[static_cast<std::size_t>(found - outcomes.begin())];

  if (!(seconds >= 0)) return; // negative: not observed; NaN would poison _sum
  auto bucket = std::lower_bound(duration_buckets.begin(), duration_buckets.end(), seconds);
  ++duration_bucket_counts_[static_cast<std::size_t>(bucket - duration_buckets.begin())];
  duration_sum_ += seconds;
  ++duration_count_;
}

std::string metrics::render() const {
  std::string out;
  out.reserve(2048);

  append_header(out, "bs_router_jobs_total", "counter", "Jobs finished, by outcome.");
  for (std::size_t i = 0; i < outcomes.size(); ++i)
    append_sample(out, "bs_router_jobs_total", "outcome", outcomes[i], jobs_by_outcome_[i]);

  append_header(out, "bs_router_job_duration_seconds", "histogram",
                "Time cbsd took for finished jobs that ran it.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < duration_bucket_counts_.size(); ++i) {
    cumulative += duration_bucket_counts_[i];
    std::string bound;
    append_value(bound, i < duration_buckets.size() ? duration_buckets[i]
                                                : std::numeric_limits<double>::infinity());
    append_sample(out, "bs_router_job_duration_seconds_bucket", "le", bound, cumulative);
  }
  append_sample(out, "bs_router_job_duration_seconds_sum", duration_sum_);
  append_sample(out, "bs_router_job_duration_seconds_count", duration_count_);

  append_header(out, "bs_router_jobs_running", "gauge", "Jobs whose cbsd is running.");
  append_sample(out, "bs_router_jobs_running", std::uint64_t{jobs_running_});

  append_header(out, "bs_router_jobs_waiting", "gauge",
                "Jobs held in the router, waiting for their jname or a free slot.");
  append_sample(out, "bs_router_jobs_waiting", std::uint64_t{jobs_waiting_});

  append_header(out, "bs_router_replies_waiting", "gauge",
                "Replies not yet put on the broker.");
  append_sample(out, "bs_router_replies_waiting", std::uint64_t{replies_waiting_});

  append_header(out, "bs_router_broker_connected", "gauge",
                "1 while connected to beanstalkd, 0 otherwise.");
  append_sample(out, "bs_router_broker_connected", std::uint64_t{broker_connected_ ? 1u : 0u});

  append_header(out, "bs_router_reconnects_total", "counter",
                "Connections to beanstalkd made again after one was lost.");
  append_sample(out, "bs_router_reconnects_total", reconnects_);

  append_header(out, "bs_router_jobs_reserved_elsewhere", "gauge",
                "Jobs of the pool's tube the broker keeps reserved for a connection that is not the router's (at the last look).");
  append_sample(out, "bs_router_jobs_reserved_elsewhere", std::uint64_t{jobs_reserved_elsewhere_});

  append_header(out, "bs_router_jobs_taken_over_total", "counter",
                "Jobs the broker kept reserved past their TTR for another connection, served by the router from their body.");
  append_sample(out, "bs_router_jobs_taken_over_total", jobs_taken_over_);

  append_header(out, "bs_router_journal_syncs_total", "counter",
                "Times the journal was made durable (one fdatasync, or a rewrite, for every job that moved meanwhile).");
  append_sample(out, "bs_router_journal_syncs_total", journal_syncs_);

  append_header(out, "bs_router_journal_sync_seconds_total", "counter",
                "Time spent making the journal durable, during which the router waited for the disk.");
  append_sample(out, "bs_router_journal_sync_seconds_total", journal_sync_seconds_);

  if (!broker_kind_.empty()) {
    append_header(out, "bs_router_broker_info", "gauge",
                  "The broker kind and the node the router takes jobs from (empty: not connected); always 1.");
    out += "bs_router_broker_info{broker=\"";
    append_label_value(out, broker_kind_);
    out += "\",node=\"";
    append_label_value(out, broker_node_);
    out += "\"} 1\n";
  }

  append_header(out, "bs_router_info", "gauge", "Version of this router; always 1.");
  append_sample(out, "bs_router_info", "version", version_, std::uint64_t{1});

  append_header(out, "bs_router_start_time_seconds", "gauge",
                "When this router started, in seconds since the Unix epoch.");
  append_sample(out, "bs_router_start_time_seconds", start_time_seconds_);
  return out;
}

} // namespace bs_router
