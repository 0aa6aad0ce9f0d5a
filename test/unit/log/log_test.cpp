// log_test.cpp — the logging facility: level names, the threshold from the
// environment, and the shape of a line.
#include <doctest/doctest.h>

#include <cstdlib>

#include "log/log.hpp"

using namespace tabby::logging;

TEST_CASE("levels parse in any case; unknown names are refused") {
  CHECK(parse_level("debug") == Level::kDebug);
  CHECK(parse_level("INFO") == Level::kInfo);
  CHECK(parse_level("Warn") == Level::kWarning);
  CHECK(parse_level("warning") == Level::kWarning);
  CHECK(parse_level("error") == Level::kError);
  CHECK_FALSE(parse_level("verbose").has_value());
  CHECK_FALSE(parse_level("").has_value());
}

TEST_CASE("a line names its level (except info), component and subject") {
  CHECK(format_line(Level::kInfo, "bgp", "peer 10.0.0.2", "established") == "tabby: bgp: peer 10.0.0.2: established\n");
  CHECK(format_line(Level::kWarning, "agent", "", "datastore lost") == "tabby: warning: agent: datastore lost\n");
  CHECK(format_line(Level::kError, "", "", "x") == "tabby: error: x\n");
}

TEST_CASE("TABBY_LOG_LEVEL sets the threshold; a bad value is an error that names it") {
  set_threshold(Level::kInfo);
  ::setenv("TABBY_LOG_LEVEL", "error", 1);
  CHECK_FALSE(threshold_from_env().has_value());
  CHECK(threshold() == Level::kError);
  Logger log{"test"};
  CHECK_FALSE(log.enabled(Level::kWarning));
  CHECK(log.enabled(Level::kError));
  ::setenv("TABBY_LOG_LEVEL", "loud", 1);
  auto bad = threshold_from_env();
  REQUIRE(bad.has_value());
  CHECK(bad->find("'loud'") != std::string::npos);
  CHECK(threshold() == Level::kError);  // unchanged by the bad value
  ::unsetenv("TABBY_LOG_LEVEL");
  set_threshold(Level::kInfo);
}
