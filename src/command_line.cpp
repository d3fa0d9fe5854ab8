#include "bs_router/command_line.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bs_router/job.hpp"

namespace bs_router {

namespace {

// Exit status for a wrong command line, as Go's flag package and BSD
// utilities use.
constexpr int usage_exit_code = 2;

struct option_name {
  std::string_view name; // without dashes: "config", or "c"
  bool takes_value;
};

// Go's flag package took "-config FILE"; CLI11 reads a multi-letter name
// after a single dash as a cluster of one-letter flags. Known long names are
// therefore rewritten to their double-dash form before CLI11 sees them.
// Values (the argument after an option that takes one) are left alone, and
// so is everything after "--".
std::vector<std::string> with_double_dash_long_names(int argc, const char* const* argv,
                                                     const std::vector<option_name>& options) {
  std::vector<std::string> args;
  bool next_is_value = false;
  bool options_ended = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (next_is_value || options_ended) {
      next_is_value = false;
      args.push_back(std::move(arg));
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      args.push_back(std::move(arg));
      continue;
    }
    std::string_view dashes;
    if (arg.rfind("--", 0) == 0) dashes = "--";
    else if (arg.rfind('-', 0) == 0) dashes = "-";
    std::string_view dashes_removed = std::string_view(arg).substr(dashes.size());
    std::string_view name = dashes_removed.substr(0, dashes_removed.find('='));
    auto known = std::find_if(options.begin(), options.end(), [&](const option_name& o) { return o.name == name; });
    if (!dashes.empty() && known != options.end()) {
      bool long_name = name.size() > 1;
      if (long_name && dashes == "-") arg.insert(0, "-");
      bool value_attached = dashes_removed.size() > name.size();
      next_is_value = known->takes_value && !value_attached;
    }
    args.push_back(std::move(arg));
  }
  // CLI11 takes a vector of arguments in reverse order.
  std::reverse(args.begin(), args.end());
  return args;
}

template <typename Options> parsed_command_line<Options> usage_error(const CLI::App& app, const std::string& what) {
  parsed_command_line<Options> result;
  result.exit_code = usage_exit_code;
  result.output = app.get_name() + ": " + what + "\nRun with --help for more information.\n";
  result.output_is_error = true;
  return result;
}

// Runs CLI11 and turns its outcome (help, version, errors) into a result.
// Returns nothing when parsing succeeded and the caller has more checking to
// do.
template <typename Options>
std::optional<parsed_command_line<Options>> run_parser(CLI::App& app, std::vector<std::string> args) {
  try {
    app.parse(std::move(args));
  } catch (const CLI::CallForHelp&) {
    parsed_command_line<Options> result;
    result.output = app.help();
    return result;
  } catch (const CLI::CallForVersion& version) {
    parsed_command_line<Options> result;
    result.output = std::string(version.what()) + "\n";
    return result;
  } catch (const CLI::ParseError& error) {
    return usage_error<Options>(app, error.what());
  }
  return std::nullopt;
}

// --timeout: a number of seconds ("0.5", "30") above 0 and at most
// max_client_timeout_seconds.
std::optional<double> parse_seconds(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  double seconds = std::strtod(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size() || !(seconds > 0 && seconds <= max_client_timeout_seconds))
    return std::nullopt;
  return seconds;
}

} // namespace

parsed_command_line<router_options> parse_router_command_line(int argc, const char* const* argv) {
  CLI::App app("Runs CBSD commands for jobs taken from a beanstalkd tube, and puts their results on reply tubes.",
               "bs_router");
  app.set_version_flag("-V,--version", std::string("bs_router ") + BS_ROUTER_VERSION);
  router_options options;
  // Repeated options: the last one counts, as with Go's flag package.
  app.add_option("-c,--config", options.config_path, "Config file of the pool (also -config FILE)")
      ->type_name("FILE")
      ->take_last();
  app.add_option("--cbsdenv", options.cbsdenv,
                 "CBSD workdir, used when the config file has no cbsdenv (also -cbsdenv DIR)")
      ->type_name("DIR")
      ->take_last();
  app.add_option("--broker", options.broker,
                 "Broker, used when the config file has no broker: beanstalkd or rabbitmq (also -broker NAME)")
      ->type_name("NAME")
      ->take_last();
  app.add_flag("--check", options.check_only, "Check the config file and the CBSD workdir, then exit");
  app.add_flag("--journal", options.list_journal,
               "List the jobs the pool's journal holds (taken, not yet answered), then exit");

  auto args = with_double_dash_long_names(argc, argv,
                                          {{"config", true},
                                           {"c", true},
                                           {"cbsdenv", true},
                                           {"broker", true},
                                           {"check", false},
                                           {"journal", false},
                                           {"help", false},
                                           {"version", false}});
  if (auto finished = run_parser<router_options>(app, std::move(args))) return *finished;
  if (options.config_path.empty()) return usage_error<router_options>(app, "-config FILE is required");

  parsed_command_line<router_options> result;
  result.options = std::move(options);
  return result;
}

parsed_command_line<client_options> parse_client_command_line(int argc, const char* const* argv) {
  CLI::App app("Sends one job to a bs_router pool and prints its result.\n"
               "The job is given as -body JSON or as words: COMMAND key=value ...",
               "bs_router-client");
  app.set_version_flag("-V,--version", std::string("bs_router-client ") + BS_ROUTER_VERSION);
  client_options options;
  std::string timeout_text;
  app.add_option("-c,--config", options.config_path, "Config file of the pool (also -config FILE)")
      ->type_name("FILE")
      ->take_last();
  app.add_option("-b,--body", options.body, "Job body as JSON (also -body JSON)")->type_name("JSON")->take_last();
  CLI::Option* timeout_option = app.add_option("--timeout", timeout_text, "Give up after SECONDS, above 0 and at most a year, however far the job got (default: wait for ever)")
      ->type_name("SECONDS")
      ->take_last();
  app.add_flag("--json", options.json, "Print the whole final reply as JSON");
  app.add_flag("--no-progress", options.quiet_progress, "Do not print the output of replies before the final one");
  app.add_option("--key-file", options.key_file, "Sign the job with this key file (needs --key-id); only a reply signed with it counts")
      ->type_name("FILE")
      ->take_last();
  app.add_option("--key-id", options.key_id, "Key id to sign with: of --key-file, or of the config's job_keys")
      ->type_name("ID")
      ->take_last();
  app.add_option("--lifetime", options.lifetime, "A signed job expires SECONDS after it is put (default 600)")
      ->type_name("SECONDS")
      ->check(CLI::Range(1, max_timeout_seconds).description(""))
      ->take_last();
  app.add_option("words", options.command, "COMMAND key=value ...: the job in short form")->type_name("WORD");

  auto args = with_double_dash_long_names(argc, argv,
                                          {{"config", true},
                                           {"c", true},
                                           {"body", true},
                                           {"b", true},
                                           {"timeout", true},
                                           {"json", false},
                                           {"no-progress", false},
                                           {"key-file", true},
                                           {"key-id", true},
                                           {"lifetime", true},
                                           {"help", false},
                                           {"version", false}});
  if (auto finished = run_parser<client_options>(app, std::move(args))) return *finished;

  if (options.config_path.empty()) return usage_error<client_options>(app, "-config FILE is required");
  if (!options.body.empty() && !options.command.empty())
    return usage_error<client_options>(app, "give the job either as -body JSON or as words, not both");
  if (options.body.empty() && options.command.empty())
    return usage_error<client_options>(app, "no job: give -body JSON or COMMAND key=value ...");
  if (!options.command.empty()) {
    try {
      body_from_words(options.command);
    } catch (const std::invalid_argument& error) {
      return usage_error<client_options>(app, error.what());
    }
  }
  if (!options.key_file.empty() && options.key_id.empty())
    return usage_error<client_options>(app, "--key-file needs --key-id: the id the router knows the key by");
  if (timeout_option->count() > 0) {
    options.timeout = parse_seconds(timeout_text);
    if (!options.timeout)
      return usage_error<client_options>(app, "--timeout: expected a number of seconds above 0 and at most " +
                                                  std::to_string(static_cast<long long>(max_client_timeout_seconds)) +
                                                  " (a year), got \"" + timeout_text + "\"");
  }

  parsed_command_line<client_options> result;
  result.options = std::move(options);
  return result;
}

std::string body_from_words(const std::vector<std::string>& words) {
  if (words.empty() || words.front().empty()) throw std::invalid_argument("no command given");
  // ordered_json keeps the arguments in the order they were typed, so the
  // body reads like the command line it came from.
  nlohmann::ordered_json args = nlohmann::ordered_json::object();
  for (auto word = words.begin() + 1; word != words.end(); ++word) {
    auto equals = word->find('=');
    if (equals == std::string::npos) throw std::invalid_argument("\"" + *word + "\": expected key=value");
    std::string key = word->substr(0, equals);
    if (key.empty()) throw std::invalid_argument("\"" + *word + "\": empty key");
    if (args.contains(key)) throw std::invalid_argument("\"" + key + "\" given twice");
    args[key] = word->substr(equals + 1);
  }
  nlohmann::ordered_json body;
  body["Command"] = words.front();
  body["CommandArgs"] = std::move(args);
  try {
    return body.dump();
  } catch (const nlohmann::ordered_json::type_error&) {
    // JSON text is UTF-8; the words came from a terminal in another encoding.
    throw std::invalid_argument("the command and its arguments must be UTF-8 text");
  }
}

} // namespace bs_router
