// `bpnas export`: a model file as ONNX (artifact/onnx_export.h), and the writer `bpnas fetch --onnx`
// shares with it.
#ifndef BPNAS_CLI_EXPORT_COMMAND_H_
#define BPNAS_CLI_EXPORT_COMMAND_H_

#include <string>

#include "absl/status/statusor.h"
#include "artifact/onnx_export.h"
#include "bpnas/v1/model.pb.h"

namespace bpnas {

// bpnas export MODEL.bpq -o MODEL.onnx [--activations] [--float] [--json]
int CmdExport(int argc, char** argv);

// Exports `model` and writes it to `path` atomically (a temporary file renamed into place).
// Returns the bytes written. INVALID_ARGUMENT naming the path when it cannot be written; otherwise
// ExportOnnx's errors.
absl::StatusOr<int64_t> WriteOnnxFile(const bpnas::v1::QuantizedModel& model,
                                      const OnnxExportOptions& options, const std::string& path);

}  // namespace bpnas

#endif  // BPNAS_CLI_EXPORT_COMMAND_H_
