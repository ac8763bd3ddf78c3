#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "absl/strings/ascii.h"

namespace bpnas {
namespace {

char LevelLetter(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return 'D';
    case LogLevel::kInfo:
      return 'I';
    case LogLevel::kWarning:
      return 'W';
    case LogLevel::kError:
      return 'E';
  }
  return '?';
}

// Writes one whole line; the lock keeps lines of concurrent callers apart (stdio locks each call,
// but a line is written with one call only while it fits the stream's buffer).
void WriteLine(const std::string& line) {
  static std::mutex* mu = new std::mutex();  // never destroyed: logging may run during exit
  std::lock_guard<std::mutex> lock(*mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

// The environment's level, INFO when unset or unknown (reported once, here).
int LevelFromEnvironment() {
  const char* text = std::getenv("BPNAS_LOG_LEVEL");
  if (text == nullptr || *text == '\0') return static_cast<int>(LogLevel::kInfo);
  absl::StatusOr<LogLevel> parsed = ParseLogLevel(text);
  if (parsed.ok()) return static_cast<int>(*parsed);
  WriteLine(absl::StrCat(
      FormatLogLine(absl::Now(), LogLevel::kWarning, "log",
                    absl::StrCat("BPNAS_LOG_LEVEL: ", parsed.status().message(), "; logging at INFO")),
      "\n"));
  return static_cast<int>(LogLevel::kInfo);
}

constexpr int kUnset = -1;
std::atomic<int> g_min_level{kUnset};

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view text) {
  const std::string upper = absl::AsciiStrToUpper(text);
  if (upper == "DEBUG") return LogLevel::kDebug;
  if (upper == "INFO") return LogLevel::kInfo;
  if (upper == "WARNING" || upper == "WARN") return LogLevel::kWarning;
  if (upper == "ERROR") return LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level \"", text, "\": want DEBUG, INFO, WARNING or ERROR"));
}

void SetMinLogLevel(LogLevel level) { g_min_level.store(static_cast<int>(level)); }

absl::Status SetMinLogLevelFromFlag(absl::string_view text) {
  if (text.empty()) return absl::OkStatus();
  absl::StatusOr<LogLevel> level = ParseLogLevel(text);
  if (!level.ok()) return level.status();
  SetMinLogLevel(*level);
  return absl::OkStatus();
}

LogLevel MinLogLevel() {
  int level = g_min_level.load(std::memory_order_relaxed);
  if (level == kUnset) {
    // Two threads may both read the environment on first use; they agree, and one report of a bad
    // value at most per thread is harmless. A SetMinLogLevel in between wins.
    int expected = kUnset;
    const int from_env = LevelFromEnvironment();
    g_min_level.compare_exchange_strong(expected, from_env);
    level = g_min_level.load();
  }
  return static_cast<LogLevel>(level);
}

std::string FormatLogLine(absl::Time time, LogLevel level, absl::string_view component,
                          absl::string_view message) {
  const std::string stamp = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
  return absl::StrCat(stamp, " ", std::string(1, LevelLetter(level)), " ", component, "] ", message);
}

void Log(LogLevel level, absl::string_view component, absl::string_view message) {
  if (!LogEnabled(level)) return;
  WriteLine(absl::StrCat(FormatLogLine(absl::Now(), level, component, message), "\n"));
}

}  // namespace bpnas
