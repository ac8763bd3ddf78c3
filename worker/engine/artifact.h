// The model artifact (`.bpq`, proto bpnas.v1.QuantizedModel, format 2): export from a trained
// network, and the fake-quantized interpreter that runs the artifact from the proto alone. Reading,
// writing and validating the file are torch-free (artifact/model_file.h).
#ifndef BPNAS_WORKER_ENGINE_ARTIFACT_H_
#define BPNAS_WORKER_ENGINE_ARTIFACT_H_

#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "artifact/model_file.h"
#include "bpnas/v1/model.pb.h"
#include "spec/spec.h"
#include "worker/engine/data.h"
#include "worker/engine/supernet.h"

namespace bpnas {

// Builds the artifact from a network whose searchable layers are all pinned: every batch norm after a
// conv folded into it, weights quantized exactly as the weights phases' folded forward quantizes them
// (SupernetImpl::SetBatchNormFolding), packed at their bits. Sets the checksum.
absl::StatusOr<bpnas::v1::QuantizedModel> ExportQuantizedModel(const Supernet& net, const JobPlan& plan,
                                                               const bpnas::v1::SearchResult& result);

// Runs the artifact on images [N, C, H, W] in [0, 1]; returns logits [N, classes].
// Uses only what the proto holds (no Supernet): float convolutions of the dequantized codes (the
// fake-quantized semantics of model.proto). INVALID_ARGUMENT for a model ValidateModel refuses or
// images of another shape.
absl::StatusOr<torch::Tensor> RunQuantizedModel(const bpnas::v1::QuantizedModel& model,
                                                const torch::Tensor& images);
// The predicted class (argmax of the logits) of every image [N, C, H, W], in order, computed in
// batches of `batch_size`. Errors as RunQuantizedModel.
absl::StatusOr<std::vector<int64_t>> PredictQuantizedModel(const bpnas::v1::QuantizedModel& model,
                                                           const torch::Tensor& images, int batch_size = 500);
// Accuracy in percent of the artifact on `data`; with `predictions`, also each image's class (one
// pass over the data for both).
absl::StatusOr<double> EvaluateQuantizedModel(const bpnas::v1::QuantizedModel& model, const Dataset& data,
                                              int batch_size = 500,
                                              std::vector<int64_t>* predictions = nullptr);

// The integer-only engine (artifact/integer_inference.h) beside the fake-quantized interpreter on
// the same images: both see the images as 8-bit pixels, round(255 x) (what the built-in data sets
// hold exactly).
struct IntegerComparison {
  int64_t samples = 0;
  double integer_accuracy = 0;          // percent
  double float_accuracy = 0;            // percent, the fake-quantized interpreter
  double agreement = 0;                 // percent of images whose top-1 class is the same in both
  double max_abs_logit_difference = 0;  // over every logit of every image, in real units
  double logit_scale = 0;               // of the integer logits
  double integer_seconds = 0;           // wall time of the integer engine over all images
  double float_seconds = 0;
};
// Runs both engines on all of `data`; `threads` for the integer engine (0: every core). Errors as
// IntegerModel::Build (UNIMPLEMENTED for input normalization) and RunQuantizedModel.
absl::StatusOr<IntegerComparison> CompareIntegerInference(const bpnas::v1::QuantizedModel& model,
                                                          const Dataset& data, int batch_size = 500,
                                                          int threads = 0);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_ARTIFACT_H_
