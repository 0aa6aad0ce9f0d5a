// log.hpp — tabby's one logging facility, for the I/O shell (the speaker, the
// agent runtime, the dataplane driver, the API servers). Pure libraries do not
// log: they return results and problems, and the shell decides what to print.
//
// A line is "tabby: [<level>: ]<component>: [<subject>: ]<message>" on stderr,
// written with one write(2) so lines from several processes never interleave.
// The level is left out for info, the common case; <subject> names the peer or
// object the line is about ("peer 10.0.0.2", "policy default/deny-all").
// Lines below the threshold (TABBY_LOG_LEVEL: debug, info, warning, error;
// default info) are not formatted at all.
//
// Owns: the log line format and the threshold. May call: the C library (write(2), getenv).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tabby::logging {

enum class Level { kDebug, kInfo, kWarning, kError };

// "debug", "info", "warning" (or "warn"), "error", any case; nullopt otherwise.
std::optional<Level> parse_level(std::string_view text);
std::string_view level_name(Level level);

// The threshold: lines below it are dropped. Starts at kInfo.
void set_threshold(Level level);
Level threshold();
// Reads TABBY_LOG_LEVEL; an unknown value is an error naming it (the threshold
// is then left unchanged). Unset or empty leaves the default.
std::optional<std::string> threshold_from_env();

// The formatted line, newline included (pure; what write() prints).
std::string format_line(Level level, std::string_view component, std::string_view subject,
                        std::string_view message);
void write(Level level, std::string_view component, std::string_view subject, std::string_view message);

// A component's logger: `constexpr Logger kLog{"bgp"}; kLog.info("...");`
class Logger {
 public:
  constexpr explicit Logger(std::string_view component) : component_(component) {}
  void debug(std::string_view message, std::string_view subject = {}) const { at(Level::kDebug, subject, message); }
  void info(std::string_view message, std::string_view subject = {}) const { at(Level::kInfo, subject, message); }
  void warning(std::string_view message, std::string_view subject = {}) const {
    at(Level::kWarning, subject, message);
  }
  void error(std::string_view message, std::string_view subject = {}) const { at(Level::kError, subject, message); }
  bool enabled(Level level) const { return level >= threshold(); }

 private:
  void at(Level level, std::string_view subject, std::string_view message) const {
    if (enabled(level)) write(level, component_, subject, message);
  }
  std::string_view component_;
};

}  // namespace tabby::logging
