// The model artifact (`.bpq`, proto bpnas.v1.QuantizedModel): export from a trained network,
// checksummed file I/O, and an interpreter that runs the artifact from the proto alone.
#ifndef BPNAS_WORKER_ENGINE_ARTIFACT_H_
#define BPNAS_WORKER_ENGINE_ARTIFACT_H_

#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "bpnas/v1/model.pb.h"
#include "spec/spec.h"
#include "worker/engine/data.h"
#include "worker/engine/supernet.h"

namespace bpnas {

// Builds the artifact from a network whose searchable layers are all pinned. Batch norm is stored
// folded into a per-channel affine (eval mode). Sets the checksum.
absl::StatusOr<bpnas::v1::QuantizedModel> ExportQuantizedModel(const Supernet& net, const JobPlan& plan,
                                                               const bpnas::v1::SearchResult& result);

// sha256 of the model serialized deterministically with `checksum` cleared.
std::string ModelChecksum(const bpnas::v1::QuantizedModel& model);

// The bytes of a `.bpq` file: the model serialized deterministically (what WriteModelFile writes).
std::string SerializeModel(const bpnas::v1::QuantizedModel& model);

absl::Status WriteModelFile(const bpnas::v1::QuantizedModel& model, const std::string& path);
// NOT_FOUND if unreadable; DATA_LOSS if it does not parse or its checksum does not match.
absl::StatusOr<bpnas::v1::QuantizedModel> ReadModelFile(const std::string& path);

// Runs the artifact on images [N, C, H, W] in [0, 1]; returns logits [N, classes].
// Uses only what the proto holds (no Supernet). INVALID_ARGUMENT for a malformed graph.
absl::StatusOr<torch::Tensor> RunQuantizedModel(const bpnas::v1::QuantizedModel& model,
                                                const torch::Tensor& images);
// Accuracy in percent of the artifact on `data`.
absl::StatusOr<double> EvaluateQuantizedModel(const bpnas::v1::QuantizedModel& model, const Dataset& data,
                                              int batch_size = 500);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_ARTIFACT_H_
