#include "common/log.h"

#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/time/civil_time.h"

namespace bpnas {
namespace {

absl::Time At(int64_t unix_millis) { return absl::FromUnixMillis(unix_millis); }

TEST(LogLine, HasUtcMillisecondTimestampLevelLetterAndComponent) {
  const absl::Time t = absl::FromCivil(absl::CivilSecond(2026, 12, 7, 23, 59, 1), absl::UTCTimeZone()) +
                       absl::Milliseconds(123) + absl::Microseconds(999);
  EXPECT_EQ(FormatLogLine(t, LogLevel::kInfo, "server", "message"),
            "2026-12-07T23:59:01.123Z I server] message");
  EXPECT_EQ(FormatLogLine(t, LogLevel::kDebug, "c", "x"), "2026-12-07T23:59:01.123Z D c] x");
  EXPECT_EQ(FormatLogLine(t, LogLevel::kWarning, "c", "x"), "2026-12-07T23:59:01.123Z W c] x");
  EXPECT_EQ(FormatLogLine(t, LogLevel::kError, "c", "x"), "2026-12-07T23:59:01.123Z E c] x");
}

TEST(LogLine, PadsMillisecondsAndUsesUtc) {
  EXPECT_EQ(FormatLogLine(At(5), LogLevel::kInfo, "w", "m"), "1970-01-01T00:00:00.005Z I w] m");
}

TEST(ParseLogLevel, AcceptsNamesInAnyCaseAndRejectsOthers) {
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("INFO"), LogLevel::kInfo);
  EXPECT_EQ(*ParseLogLevel("Warning"), LogLevel::kWarning);
  EXPECT_EQ(*ParseLogLevel("warn"), LogLevel::kWarning);
  EXPECT_EQ(*ParseLogLevel("error"), LogLevel::kError);
  EXPECT_EQ(ParseLogLevel("verbose").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseLogLevel("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SetMinLogLevelFromFlag, SetsANamedLevelKeepsItForEmptyAndRejectsOthers) {
  const LogLevel saved = MinLogLevel();
  ASSERT_TRUE(SetMinLogLevelFromFlag("error").ok());
  EXPECT_EQ(MinLogLevel(), LogLevel::kError);
  ASSERT_TRUE(SetMinLogLevelFromFlag("").ok());
  EXPECT_EQ(MinLogLevel(), LogLevel::kError);
  EXPECT_EQ(SetMinLogLevelFromFlag("loud").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MinLogLevel(), LogLevel::kError);
  EXPECT_FALSE(LogEnabled(LogLevel::kWarning));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  SetMinLogLevel(saved);
}

TEST(Log, WritesEnabledLinesToStderrAndDropsTheOthers) {
  const LogLevel saved = MinLogLevel();
  SetMinLogLevel(LogLevel::kWarning);
  testing::internal::CaptureStderr();
  LogInfo("test", "dropped ", 1);
  LogWarning("test", "kept ", 2, " of ", 3);
  Log(LogLevel::kError, "other", "also kept");
  const std::string err = testing::internal::GetCapturedStderr();
  SetMinLogLevel(saved);
  const std::regex want(
      R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z W test\] kept 2 of 3
\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z E other\] also kept
)");
  EXPECT_TRUE(std::regex_match(err, want)) << err;
}

TEST(Log, ConcurrentLinesDoNotInterleave) {
  const LogLevel saved = MinLogLevel();
  SetMinLogLevel(LogLevel::kInfo);
  testing::internal::CaptureStderr();
  std::vector<std::thread> threads;
  const std::string payload(300, 'x');
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &payload] {
      for (int i = 0; i < 100; ++i) LogInfo("thread", t, " ", payload);
    });
  }
  for (auto& th : threads) th.join();
  const std::string err = testing::internal::GetCapturedStderr();
  SetMinLogLevel(saved);
  const std::regex line(R"(\S+ I thread\] \d x{300})");
  size_t start = 0, lines = 0;
  while (start < err.size()) {
    const size_t end = err.find('\n', start);
    ASSERT_NE(end, std::string::npos);
    EXPECT_TRUE(std::regex_match(err.substr(start, end - start), line)) << err.substr(start, end - start);
    start = end + 1;
    ++lines;
  }
  EXPECT_EQ(lines, 400u);
}

}  // namespace
}  // namespace bpnas
