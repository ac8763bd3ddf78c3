// The `.bpq` file (proto bpnas.v1.QuantizedModel, format 2; docs/artifact.md): deterministic
// serialization, the checksum, and reading with every check a file from elsewhere needs.
//
// Torch-free: the CLI, the engine, the integer reference and the ONNX export share it.
#ifndef BPNAS_ARTIFACT_MODEL_FILE_H_
#define BPNAS_ARTIFACT_MODEL_FILE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "artifact/validate.h"
#include "bpnas/v1/model.pb.h"

namespace bpnas {

inline constexpr uint32_t kModelFormatVersion = 2;

// sha256 (hex) of the model serialized deterministically with `checksum` cleared.
std::string ModelChecksum(const bpnas::v1::QuantizedModel& model);

// The bytes of a `.bpq` file: the model serialized deterministically (what WriteModelFile writes).
std::string SerializeModel(const bpnas::v1::QuantizedModel& model);

// Parses and checks the bytes of a model; `source` (a path, "job 12") starts every error message.
// DATA_LOSS: empty, does not parse, checksum mismatch, or inconsistent contents (ValidateModel says
// which node and what); FAILED_PRECONDITION: a format version this bpnas does not read (named).
absl::StatusOr<bpnas::v1::QuantizedModel> ParseModel(std::string_view bytes, const std::string& source);

// Writes atomically (a temporary file renamed into place).
absl::Status WriteModelFile(const bpnas::v1::QuantizedModel& model, const std::string& path);
// NOT_FOUND if unreadable; otherwise as ParseModel, with the path as source.
absl::StatusOr<bpnas::v1::QuantizedModel> ReadModelFile(const std::string& path);

}  // namespace bpnas

#endif  // BPNAS_ARTIFACT_MODEL_FILE_H_
