#pragma once
// One JSON object of a config file, as config.cpp and the broker sections
// read it: keys looked up by name (letter case forgiven, with a warning),
// values checked by type and range, and every error a config_error that
// names the file and the key path ("pool1.json: beanstalkd.tube: ...").

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "bs_router/config.hpp"
#include "bs_router/job.hpp"

namespace bs_router {

namespace config_detail {

using json = nlohmann::json;

inline bool equal_ignoring_ascii_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

inline bool is_absolute_path(const std::string& path) { return !path.empty() && path.front() == '/'; }

// One JSON object of the config, with the key path that leads to it. Keys are
// looked up by name and remembered, so that whatever was never asked for can
// be reported as unknown at the end.
class config_object {
 public:
  config_object(const json& object, std::string path, const std::string& source, std::vector<std::string>& warnings)
      : object_(object), path_(std::move(path)), source_(source), warnings_(warnings) {}

  // The value of `name`, or nullptr when it is absent or null (the Go router
  // decoded null as "not given", so do we). Like Go's encoding/json, a key
  // that differs only in letter case is taken when the exact one is absent,
  // with a warning.
  const json* find(const std::string& name) {
    const json* found = nullptr;
    if (auto exact = object_.find(name); exact != object_.end()) {
      used_.push_back(name);
      found = &*exact;
    } else {
      for (auto it = object_.begin(); it != object_.end(); ++it) {
        if (equal_ignoring_ascii_case(it.key(), name)) {
          used_.push_back(it.key());
          warnings_.push_back(source_ + ": key \"" + key_path(it.key()) + "\" taken as \"" + key_path(name) + "\"");
          found = &*it;
          break;
        }
      }
    }
    if (found && found->is_null()) return nullptr;
    return found;
  }

  // Warns about every key nobody asked for.
  void report_unknown_keys() const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (std::find(used_.begin(), used_.end(), it.key()) == used_.end())
        warnings_.push_back(source_ + ": unknown key \"" + key_path(it.key()) + "\" ignored");
    }
  }

  std::string key_path(const std::string& name) const { return path_.empty() ? name : path_ + "." + name; }

  [[noreturn]] void fail(const std::string& name, const std::string& what) const {
    throw config_error(source_ + ": " + key_path(name) + ": " + what);
  }

  std::optional<std::string> optional_string(const std::string& name) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_string()) fail(name, std::string("expected a string, got ") + value->type_name());
    return value->get<std::string>();
  }

  std::string required_string(const std::string& name) {
    std::optional<std::string> value = optional_string(name);
    if (!value || value->empty()) fail(name, "missing");
    return *value;
  }

  std::optional<bool> optional_bool(const std::string& name) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_boolean()) fail(name, std::string("expected true or false, got ") + value->type_name());
    return value->get<bool>();
  }

  // Integers only, as Go's decoder into an int: 5.0 and "5" are refused.
  std::optional<std::int64_t> optional_integer(const std::string& name, std::int64_t min, std::int64_t max) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_number_integer()) {
      if (value->is_number()) fail(name, "expected an integer, got " + value->dump());
      fail(name, std::string("expected an integer, got ") + value->type_name());
    }
    // nlohmann stores non-negative integers as uint64, negative ones as int64.
    bool too_small = false;
    bool too_large = false;
    if (value->is_number_unsigned()) {
      auto number = value->get<std::uint64_t>();
      too_small = min > 0 && number < static_cast<std::uint64_t>(min);
      too_large = number > static_cast<std::uint64_t>(max);
    } else {
      auto number = value->get<std::int64_t>();
      too_small = number < min;
      too_large = number > max;
    }
    if (too_small || too_large) {
      bool unbounded = max == std::numeric_limits<int>::max();
      std::string range = !unbounded ? "between " + std::to_string(min) + " and " + std::to_string(max)
                          : too_small ? "at least " + std::to_string(min)
                                      : "at most " + std::to_string(max);
      fail(name, "must be " + range + ", got " + value->dump());
    }
    return value->get<std::int64_t>();
  }

  int required_int(const std::string& name, int min, int max = std::numeric_limits<int>::max()) {
    std::optional<std::int64_t> value = optional_integer(name, min, max);
    if (!value) fail(name, "missing");
    return static_cast<int>(*value);
  }

  void read_int(const std::string& name, int& target, int min, int max = std::numeric_limits<int>::max()) {
    if (auto value = optional_integer(name, min, max)) target = static_cast<int>(*value);
  }

  // An array of plain names (is_plain_name), e.g. the command names of
  // "commands"; `what` names what they are, for the message. Repeated names
  // count once.
  std::optional<std::set<std::string, std::less<>>> optional_name_list(const std::string& name,
                                                                       const std::string& what) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    return name_list(name, *value, what);
  }

  std::set<std::string, std::less<>> name_list(const std::string& name, const json& value, const std::string& what) {
    if (!value.is_array()) fail(name, "expected an array of " + what + "s, got " + value.type_name());
    std::set<std::string, std::less<>> names;
    for (std::size_t i = 0; i < value.size(); ++i) {
      const json& element = value[i];
      const std::string where = name + "[" + std::to_string(i) + "]";
      if (!element.is_string()) fail(where, "expected a " + what + ", got " + element.type_name());
      const std::string& text = element.get_ref<const std::string&>();
      // dump() quotes it safely, control characters and all.
      if (!is_plain_name(text))
        fail(where, element.dump(-1, ' ', false, json::error_handler_t::replace) + " is not a " + what +
                        " (1 to 64 characters from A-Z a-z 0-9 _ . -, not starting with . or -)");
      names.insert(text);
    }
    return names;
  }

  // A sub-object; missing is an error only when the caller says so.
  std::optional<config_object> optional_object(const std::string& name) {
    const json* value = find(name);
    if (!value) return std::nullopt;
    if (!value->is_object()) fail(name, std::string("expected an object, got ") + value->type_name());
    return config_object(*value, key_path(name), source_, warnings_);
  }

 private:
  const json& object_;
  std::string path_;
  const std::string& source_;
  std::vector<std::string>& warnings_;
  std::vector<std::string> used_;
};

} // namespace config_detail

} // namespace bs_router
