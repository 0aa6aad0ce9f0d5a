// log.cpp — the logging facility (log/log.hpp): level parsing, the threshold,
// line formatting and the one write(2) per line.
#include "log/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdlib>

namespace tabby::logging {
namespace {
std::atomic<Level> g_threshold{Level::kInfo};
}

std::optional<Level> parse_level(std::string_view text) {
  std::string s;
  for (char c : text) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "debug") return Level::kDebug;
  if (s == "info") return Level::kInfo;
  if (s == "warning" || s == "warn") return Level::kWarning;
  if (s == "error") return Level::kError;
  return std::nullopt;
}

std::string_view level_name(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarning: return "warning";
    case Level::kError: return "error";
  }
  return "info";
}

void set_threshold(Level level) { g_threshold.store(level, std::memory_order_relaxed); }
Level threshold() { return g_threshold.load(std::memory_order_relaxed); }

std::optional<std::string> threshold_from_env() {
  const char* v = std::getenv("TABBY_LOG_LEVEL");
  if (!v || !*v) return std::nullopt;
  auto level = parse_level(v);
  if (!level) {
    return "TABBY_LOG_LEVEL: unknown level '" + std::string(v) + "' (use debug, info, warning or error)";
  }
  set_threshold(*level);
  return std::nullopt;
}

std::string format_line(Level level, std::string_view component, std::string_view subject,
                        std::string_view message) {
  std::string line = "tabby: ";
  if (level != Level::kInfo) (line += level_name(level)) += ": ";
  if (!component.empty()) (line += component) += ": ";
  if (!subject.empty()) (line += subject) += ": ";
  line += message;
  line += '\n';
  return line;
}

void write(Level level, std::string_view component, std::string_view subject, std::string_view message) {
  std::string line = format_line(level, component, subject, message);
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) return;  // stderr closed or full: a log line is not worth blocking or failing for
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace tabby::logging
