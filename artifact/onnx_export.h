// ONNX export of a `.bpq` model (format 2): a standard QDQ graph that any ONNX runtime runs and
// that computes exactly the fake-quantized semantics of proto/bpnas/v1/model.proto.
//
//   auto model = ReadModelFile("m.bpq");
//   auto onnx = ExportOnnx(*model, {});          // serialized onnx.ModelProto, opset 13
//   // write *onnx to m.onnx; run it with ONNX Runtime: input "input", output "logits"
//
// The graph (docs/artifact.md, "ONNX export"):
//   input "input": float [N, C, H, W], N symbolic, values pixel * input.pixel_scale (pixel / 255 for
//     the built-in data sets); a model with input.mean / input.std subtracts and divides in the graph.
//   CONV2D / LINEAR layer L reading x:
//     Clip(x, 0, activation_scale * (2^activation_bits - 1)) -> QuantizeLinear(activation_scale,
//     uint8 zero point 0) -> DequantizeLinear = "L.activation": b-bit codes times the scale, exact for
//     every b in 2..8 (the clip keeps the codes below 2^b).
//     Weights: int8 initializer "L.weight_codes" (the unpacked codes) -> DequantizeLinear with
//     "L.weight_scales" (a scalar, or one per output channel with axis 0) and int8 zero points 0.
//     Conv (strides, pads), or Flatten + Gemm(transB = 1) for LINEAR, then Add of the float bias
//     "L.bias". The bias is not the op's third input: ONNX Runtime's optimizer rewrites such a
//     bias into int32 at step activation_scale * weight_scale, which at 2 to 4 bits changes the
//     network (onnx_export.cc says by how much).
//   RELU -> Relu, ADD -> Add, PAD_SHORTCUT -> Slice (steps) + Pad on the channel axis,
//   GLOBAL_AVG_POOL -> GlobalAveragePool; output "logits": float [N, num_classes].
//   metadata_props: bpnas.model_name, bpnas.format_version, bpnas.checksum, bpnas.graph ("qdq" or
//   "float").
//
// The rounding of QuantizeLinear is half to even, model.proto's is half up: the two differ only
// for an input exactly halfway between two codes.
//
// Pure; thread-safe.
#ifndef BPNAS_ARTIFACT_ONNX_EXPORT_H_
#define BPNAS_ARTIFACT_ONNX_EXPORT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bpnas/v1/model.pb.h"

namespace bpnas {

inline constexpr int kOnnxOpset = 13;

struct OnnxExportOptions {
  // Adds every layer's dequantized input ("L.activation", [N, C, H, W] or [N, features] for a
  // linear layer) as an extra graph output after "logits", in node order. Each of its values is
  // a whole multiple k * activation_scale with k in [0, 2^activation_bits - 1].
  bool expose_activations = false;
  // The same network in plain FP32: the dequantized weights (code * scale, as float) as float
  // initializers "L.weight", no Clip, no QuantizeLinear / DequantizeLinear. Not the quantized
  // model: a baseline for latency comparisons. Excludes expose_activations.
  bool float_reference = false;
};

// One exposed activation (OnnxExportOptions::expose_activations): the graph output `name` holds
// layer `layer`'s input quantized to `bits` bits with step `scale`.
struct OnnxActivation {
  std::string name;
  std::string layer;
  int bits = 0;
  float scale = 0;
};

// The serialized onnx.ModelProto of `model`. INVALID_ARGUMENT when ValidateModel refuses the model
// (its message) or both options are set; INTERNAL when the graph fails the ONNX checker or strict
// shape inference (a bug of this exporter; the message is the checker's).
absl::StatusOr<std::string> ExportOnnx(const bpnas::v1::QuantizedModel& model,
                                       const OnnxExportOptions& options);

// The outputs expose_activations adds, in order, for `model` (which must be valid).
std::vector<OnnxActivation> ExposedActivations(const bpnas::v1::QuantizedModel& model);

}  // namespace bpnas

#endif  // BPNAS_ARTIFACT_ONNX_EXPORT_H_
