// Diagnostic log lines on stderr, one per event, with a UTC timestamp, a level and the component
// that speaks:
//
//   2026-12-07T23:59:01.123Z I server] gRPC on 127.0.0.1:50051
//   2026-12-07T23:59:02.456Z W scheduler] UNAVAILABLE: cannot reach the database
//
//   LogInfo("worker", "running job ", id, " rank ", rank);  // arguments as absl::StrCat takes them
//   Log(LogLevel::kError, "server", StatusToString(status));
//
// Lines below the process-wide minimum level are dropped without being formatted. The minimum is
// INFO, or what the environment variable BPNAS_LOG_LEVEL says (DEBUG, INFO, WARNING or ERROR, in
// any case; read on first use; an unknown value is reported once and INFO kept), or what main()
// sets with SetMinLogLevel (e.g. from a --log_level flag), which wins over the environment.
//
// Thread-safety: every function may be called from any thread; each line is written whole (lines
// of concurrent callers never interleave within a line).
//
// This is for diagnostics of long-running processes. Output meant for a user at a terminal (the
// CLI's results and errors) stays plain and does not go through here.
#ifndef BPNAS_COMMON_LOG_H_
#define BPNAS_COMMON_LOG_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace bpnas {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "DEBUG", "INFO", "WARNING" or "ERROR" in any case (also "WARN"). INVALID_ARGUMENT otherwise,
// naming the accepted values.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view text);

// The process-wide minimum level; lines below it are dropped.
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();
// For a --log_level flag: a level name sets the minimum; empty leaves it as it is (BPNAS_LOG_LEVEL,
// else INFO). INVALID_ARGUMENT, with the minimum unchanged, for anything else.
absl::Status SetMinLogLevelFromFlag(absl::string_view text);
inline bool LogEnabled(LogLevel level) { return level >= MinLogLevel(); }

// One line as Log writes it, without the trailing newline:
// "YYYY-MM-DDTHH:MM:SS.mmmZ L component] message", L being D, I, W or E, the time in UTC truncated
// to the millisecond. Newlines inside `message` are kept (a multi-line message stays one event).
std::string FormatLogLine(absl::Time time, LogLevel level, absl::string_view component,
                          absl::string_view message);

// Writes FormatLogLine(now, ...) and a newline to stderr when `level` is enabled.
void Log(LogLevel level, absl::string_view component, absl::string_view message);

// Log with the message built from `args` as absl::StrCat builds it, only when the level is enabled.
template <typename... Args>
void LogAt(LogLevel level, absl::string_view component, const Args&... args) {
  if (LogEnabled(level)) Log(level, component, absl::StrCat(args...));
}
template <typename... Args>
void LogDebug(absl::string_view component, const Args&... args) {
  LogAt(LogLevel::kDebug, component, args...);
}
template <typename... Args>
void LogInfo(absl::string_view component, const Args&... args) {
  LogAt(LogLevel::kInfo, component, args...);
}
template <typename... Args>
void LogWarning(absl::string_view component, const Args&... args) {
  LogAt(LogLevel::kWarning, component, args...);
}
template <typename... Args>
void LogError(absl::string_view component, const Args&... args) {
  LogAt(LogLevel::kError, component, args...);
}

}  // namespace bpnas

#endif  // BPNAS_COMMON_LOG_H_
