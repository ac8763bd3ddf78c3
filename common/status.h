// Status helpers shared by every bpnas module.
//
// Errors cross module boundaries as absl::Status / absl::StatusOr, with codes chosen by what the
// caller should do next (INVALID_ARGUMENT: fix the request; NOT_FOUND: name an existing file;
// DATA_LOSS: the file is corrupt; FAILED_PRECONDITION: fix state first; INTERNAL: a bug).
// The Debian Abseil predates Abseil's own macros, so we carry these two.
#ifndef BPNAS_COMMON_STATUS_H_
#define BPNAS_COMMON_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BPNAS_STATUS_CONCAT_INNER_(a, b) a##b
#define BPNAS_STATUS_CONCAT_(a, b) BPNAS_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define BPNAS_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status bpnas_status_ = (expr);         \
    if (!bpnas_status_.ok()) return bpnas_status_; \
  } while (0)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status from the enclosing function.
#define BPNAS_ASSIGN_OR_RETURN(lhs, rexpr) \
  BPNAS_ASSIGN_OR_RETURN_IMPL_(BPNAS_STATUS_CONCAT_(bpnas_statusor_, __LINE__), lhs, rexpr)
#define BPNAS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                 \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

namespace bpnas {

// The process exit code a CLI command returns for `status`: 0 OK, 2 for errors the user must fix
// in what they passed (bad spec, missing or corrupt file), 1 otherwise.
int ExitCodeFor(const absl::Status& status);

// "CODE: message", for printing to a terminal.
std::string StatusToString(const absl::Status& status);

}  // namespace bpnas

#endif  // BPNAS_COMMON_STATUS_H_
