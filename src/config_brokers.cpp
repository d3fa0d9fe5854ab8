#include "bs_router/config_brokers.hpp"

#include "bs_router/beanstalk_protocol.hpp"
#include "bs_router/host_port.hpp"
#include "bs_router/job.hpp"

#include <string>
#include <utility>
#include <vector>

namespace bs_router::config_detail {

namespace {

// A job id is a 64-bit decimal: the reply tube <prefix><id> must still be a
// valid tube name for the largest id beanstalkd can hand out.
constexpr std::size_t max_job_id_digits = 20;
constexpr std::size_t max_reply_tube_prefix = beanstalk::max_tube_name - max_job_id_digits;

const char* const tube_name_rule =
    "1 to 200 bytes of letters, digits and - + / ; . $ _ ( ), not starting with '-'";

void read_queue_name(config_object& object, const std::string& name, std::string& out, std::size_t max) {
  out = object.required_string(name);
  std::string problem = queue_name_problem(out);
  if (problem.empty() && out.size() > max)
    problem = "longer than " + std::to_string(max) + " bytes: no room left for a message id of " +
              std::to_string(max_message_id_chars) + " in a " + std::to_string(max_queue_name) + "-byte queue name";
  if (!problem.empty()) object.fail(name, "\"" + out + "\" is not a queue name: " + problem);
}

} // namespace

void read_beanstalkd(config_object& object, beanstalkd_config& out) {
  out.uri = object.required_string("uri");
  std::string problem;
  auto address = parse_host_port(out.uri, problem);
  if (!address) object.fail("uri", problem);
  out.host = address->host;
  out.port = address->port;

  out.tube = object.required_string("tube");
  if (!beanstalk::valid_tube_name(out.tube)) object.fail("tube", "\"" + out.tube + "\" is not a tube name: " + tube_name_rule);

  out.reply_tube_prefix = object.required_string("reply_tube_prefix");
  if (!beanstalk::valid_tube_name(out.reply_tube_prefix))
    object.fail("reply_tube_prefix", "\"" + out.reply_tube_prefix + "\" is not a tube name: " + tube_name_rule);
  if (out.reply_tube_prefix.size() > max_reply_tube_prefix)
    object.fail("reply_tube_prefix", "longer than " + std::to_string(max_reply_tube_prefix) +
                                         " bytes: no room left for a job id in a 200-byte tube name");

  out.reconnect_timeout = object.required_int("reconnect_timeout", 1);
  out.reserve_timeout = object.required_int("reserve_timeout", 1);
  out.publish_timeout = object.required_int("publish_timeout", 1);
  out.logdir = object.required_string("logdir");
}

void read_rabbitmq(config_object& object, rabbitmq_config& out) {
  const json* list = object.find("uris");
  const json* single = object.find("uri");
  if (list && single) object.fail("uri", "give either uris or uri, not both");
  std::vector<std::pair<std::string, std::string>> texts; // key path, URI
  if (list) {
    if (!list->is_array() || list->empty())
      object.fail("uris", std::string("expected a non-empty array of AMQP URIs, got ") +
                              (list->is_array() ? "an empty array" : list->type_name()));
    for (std::size_t i = 0; i < list->size(); ++i) {
      const std::string where = "uris[" + std::to_string(i) + "]";
      if (!(*list)[i].is_string()) object.fail(where, std::string("expected a string, got ") + (*list)[i].type_name());
      texts.emplace_back(where, (*list)[i].get<std::string>());
    }
  } else {
    texts.emplace_back("uri", object.required_string("uri"));
  }
  for (const auto& [where, text] : texts) {
    std::string problem;
    auto uri = parse_amqp_uri(text, problem);
    // The URI may hold a password: the message names its place, not its text.
    if (!uri) object.fail(where, problem);
    out.uris.push_back(*uri);
  }
  read_queue_name(object, "queue", out.queue, max_queue_name);
  read_queue_name(object, "reply_queue_prefix", out.reply_queue_prefix, max_reply_queue_prefix);
  object.read_int("reconnect_timeout", out.reconnect_timeout, 1, max_timeout_seconds);
  object.read_int("publish_timeout", out.publish_timeout, 1, max_timeout_seconds);
  object.read_int("heartbeat", out.heartbeat, 0, 3600);
  out.logdir = object.required_string("logdir");
  if (auto file = object.optional_string("password_file")) {
    if (!is_absolute_path(*file)) object.fail("password_file", "expected an absolute path, got \"" + *file + "\"");
    out.password_file = *file;
  }
}

} // namespace bs_router::config_detail
