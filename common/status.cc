#include "common/status.h"

namespace bpnas {

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return 0;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 2;
    default:
      return 1;
  }
}

std::string StatusToString(const absl::Status& status) {
  return std::string(absl::StatusCodeToString(status.code())) + ": " + std::string(status.message());
}

}  // namespace bpnas
