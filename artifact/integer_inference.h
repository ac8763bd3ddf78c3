// Integer-only reference inference for format-2 models, after HAWQ-V3's integer-only scheme:
// integer activation codes, int32 accumulation, int32 biases and dyadic requantization (an integer
// multiply and a rounding shift, artifact/dyadic.h). Floats appear only when the model is built (to
// compute the multipliers, in double) and when logits are reported (int * logit_scale()).
//
//   BPNAS_ASSIGN_OR_RETURN(IntegerModel net, IntegerModel::Build(model));
//   std::vector<int32_t> logits(n * net.num_classes());
//   net.Run(pixels, n, logits.data());   // pixels: uint8 [n, C, H, W]
//
// The scheme. Every tensor between nodes is int32 values v with one real scale S per tensor (the
// real value is v * S):
//   input            v = pixel, S = input.pixel_scale.
//   CONV2D / LINEAR  codes a = clamp(round(v * Ma), 0, 2^b - 1), Ma = S / activation_scale;
//                    acc[o] = (sum a * q) * 2^g[o] + bias_int[o] (int32), where the accumulator's
//                    unit U[o] = activation_scale * weight_scale[o] is made 2^g[o] times finer,
//                    g[o] as large as int32 allows, so that bias_int[o] = round(bias[o] * 2^g[o] /
//                    U[o]) keeps the bias's precision even at 2 bits, where U is coarse;
//                    out = round(acc[o] * Mo[o]), Mo[o] = U[o] / 2^g[o] / Sout: every channel to
//                    one scale.
//   RELU             max(v, 0).
//   ADD              round(v1 * S1 / S) + round(v2 * S2 / S) at a common scale S.
//   PAD_SHORTCUT     strided slice and zero channels, on the integers.
//   GLOBAL_AVG_POOL  the int64 sum over H*W times the dyadic 1 / (H*W).
// The last node's tensor is the int32 logits, at logit_scale(). round() is floor(x + 1/2), the
// rounding of model.proto's activation quantizer.
//
// Choice of scales (no overflow, and precision that is not the bottleneck). The build computes,
// from the weight codes, a bound on every tensor's magnitude that holds for any input: a conv
// channel's |acc| is at most sum|q| * (2^b - 1) * 2^g + |bias_int| (its input codes are clamped),
// which must stay below 2^31 (else OUT_OF_RANGE), and so do the partial sums of its dot products in
// any order; an ADD's bound is the sum of its inputs'. A conv's output scale is the power of two at
// or above R / 2^29, R the largest channel bound in real units, so its int32 values stay within
// about +-2^29. An ADD keeps the finer of its two input scales when the sum of the bounds fits
// int32 (exact), else takes the power of two at or above (R1 + R2) / 2^29. Every int32 tensor thus
// carries 28 to 31 bits over its worst-case range, against the 8 bits at most that the next
// activation quantizer keeps: a requantization moves a value by half a unit of a scale 2^28 times
// finer than its bound, far below the float32 rounding of the fake-quantized interpreter.
// Where the model's scales are powers of two and its biases multiples of U, every multiplier is
// exact and so is the result, as long as no ADD has to coarsen a scale and no pool divides.
//
// Not supported: input normalization with a nonzero mean or a std other than 1 (UNIMPLEMENTED; the
// built-in data sets use neither).
//
// Thread-safe after Build: Run is const and may be called from several threads at once.
#ifndef BPNAS_ARTIFACT_INTEGER_INFERENCE_H_
#define BPNAS_ARTIFACT_INTEGER_INFERENCE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "artifact/dyadic.h"
#include "artifact/validate.h"
#include "bpnas/v1/model.pb.h"

namespace bpnas {

// What a tensor's int32 values are built to stay within (see above).
inline constexpr int kIntegerTensorBits = 29;

class IntegerModel {
 public:
  // Validates the model (ValidateModel: its INVALID_ARGUMENT as is) and builds the integer form.
  // UNIMPLEMENTED: input normalization with a nonzero mean or std != 1. OUT_OF_RANGE naming the node:
  // an accumulator bound or a bias that does not fit int32, or scales whose ratio no dyadic multiplier
  // can hold. RESOURCE_EXHAUSTED: the model needs more than kMaxWorkspaceBytes of memory per image.
  static absl::StatusOr<IntegerModel> Build(const bpnas::v1::QuantizedModel& model);

  static constexpr int64_t kMaxWorkspaceBytes = int64_t{1} << 30;

  // Runs `count` images: `pixels` holds count * input_size() bytes, [count, C, H, W]; writes
  // count * num_classes() int32 logits, [count, classes]. `threads` threads split the images
  // (0: as many as the machine has cores, at most `count`). The result does not depend on `threads`.
  void Run(const uint8_t* pixels, int64_t count, int32_t* logits, int threads = 0) const;

  int64_t input_size() const { return layout_.input.numel(); }
  int num_classes() const { return num_classes_; }
  // The real value of one logit unit.
  double logit_scale() const { return tensors_.back().scale; }

  // Every tensor's scale and integer bound, the network input first and then one per node (for tests
  // and for readers who want to see the choice).
  struct TensorRange {
    double scale = 1;
    int64_t bound = 0;  // |v| <= bound for every input
  };
  const std::vector<TensorRange>& tensor_ranges() const { return tensors_; }

 private:
  struct Conv {
    bool linear = false;
    int64_t in_channels = 0, out_channels = 0, kernel = 1, stride = 1, padding = 0;
    int64_t k = 0, k_padded = 0;            // values per output (in * kernel^2), rounded up to 16
    int activation_max = 0;                 // 2^b - 1
    Dyadic activation;                      // tensor -> codes
    std::vector<int16_t> weights;           // [out][k_padded], zero-padded
    std::vector<int32_t> accumulator_unit;  // [out]: 2^g[o], the accumulator's shift before the bias
    std::vector<int32_t> bias;              // [out], at Sacc[o] / 2^g[o]
    std::vector<Dyadic> requantize;         // [out], Sacc[o] -> the output scale
    std::vector<int64_t> patch_offset;      // [k]: where code k of a patch sits in the padded input
  };
  struct Step {
    bpnas::v1::Node::Op op = bpnas::v1::Node::OP_UNSPECIFIED;
    std::vector<int> inputs;             // tensor indices: 0 the network input, i + 1 node i
    int conv = -1;                       // into convs_
    Dyadic first, second;                // ADD: each input to the common scale; GLOBAL_AVG_POOL: 1 / (H*W)
    int64_t stride = 1, pad_before = 0;  // PAD_SHORTCUT
    std::vector<int> release;            // tensors whose last reader this step is
  };
  struct Workspace;

  IntegerModel() = default;
  void RunImage(const uint8_t* pixels, int32_t* logits, Workspace* ws) const;
  void RunConv(const Conv& c, const TensorShape& in_shape, const TensorShape& out_shape, const int32_t* in,
               int32_t* out, Workspace* ws) const;

  ModelLayout layout_;
  int num_classes_ = 0;
  std::vector<TensorRange> tensors_;
  std::vector<Conv> convs_;
  std::vector<Step> steps_;
  int64_t max_codes_ = 0;       // the largest padded input of a conv, in codes
  int64_t max_patch_rows_ = 0;  // the largest im2col tile, in codes
  int64_t max_sums_ = 0;        // the largest tile of dot products
  int64_t max_plane_ = 0;       // the largest input plane of a conv
};

}  // namespace bpnas

#endif  // BPNAS_ARTIFACT_INTEGER_INFERENCE_H_
