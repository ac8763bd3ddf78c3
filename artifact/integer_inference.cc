#include "artifact/integer_inference.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "artifact/packing.h"
#include "common/status.h"

namespace bpnas {
namespace {

using bpnas::v1::Node;
using bpnas::v1::QuantizedConv;
using bpnas::v1::QuantizedModel;

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
// The im2col tile: about this many codes (64 KiB), so that a tile stays in cache.
constexpr int64_t kTileCodes = int64_t{1} << 15;

absl::Status NodeError(absl::StatusCode code, const Node& n, int index, const std::string& what) {
  return absl::Status(code, absl::StrCat("node ", index, " '", n.name(), "': ", what));
}

// The smallest power of two >= x (x > 0).
double PowerOfTwoAtLeast(double x) {
  int e = 0;
  const double f = std::frexp(x, &e);  // x = f * 2^e, f in [0.5, 1)
  return f == 0.5 ? std::ldexp(1.0, e - 1) : std::ldexp(1.0, e);
}

// A bound on |round(v * M')| for |v| <= bound, M' the dyadic nearest M (relative error <= 2^-31,
// or absolute <= 2^-62): the margin covers that error and the rounding of this double product.
int64_t RequantizedBound(int64_t bound, double m) {
  const double b = std::floor(double(bound) * m * (1.0 + std::ldexp(1.0, -30))) + 1.0;
  return b >= 9.0e18 ? std::numeric_limits<int64_t>::max() : int64_t(b);
}

// The dyadic multiplier m for values within +-bound (zero where the bound is 0: every product is 0).
// OUT_OF_RANGE naming the node where m is outside MakeDyadic's range.
absl::StatusOr<Dyadic> Multiplier(double m, int64_t bound, const Node& n, int index, const char* what) {
  if (bound == 0) return Dyadic{};
  auto d = MakeDyadic(m);
  if (!d.ok()) {
    return NodeError(absl::StatusCode::kOutOfRange, n, index,
                     absl::StrCat(what, ": ", d.status().message(), " (scales too far apart for integers)"));
  }
  return *d;
}

// The loops below are plain C++ that the compiler vectorizes: the dot products become
// multiply-add instructions of int16 pairs into int32 lanes (pmaddwd). On x86-64 GCC also builds
// them for AVX2 and picks the variant at load time (ifunc).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BPNAS_VECTOR_CLONES __attribute__((target_clones("avx2", "default"), noinline))
#else
#define BPNAS_VECTOR_CLONES
#endif

// out[i] = clamp(round(in[i] * m), 0, max): activation codes.
BPNAS_VECTOR_CLONES void QuantizeRow(const int32_t* __restrict in, int64_t n, Dyadic m, int32_t max,
                                     int16_t* __restrict out) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = ApplyDyadic(in[i], m);
    out[i] = int16_t(a < 0 ? 0 : (a > max ? max : a));
  }
}

// acc[o * np + p] = sum_j w[o * k + j] * x[p * k + j] for o < out_channels, p < np: four output
// channels at a time, so that each patch value is loaded once for four products. The sums cannot
// overflow: Build bounds every channel's sum of |products| below 2^31.
BPNAS_VECTOR_CLONES void DotTile(const int16_t* __restrict w, int64_t out_channels,
                                 const int16_t* __restrict x, int64_t np, int64_t k,
                                 int32_t* __restrict acc) {
  int64_t o = 0;
  for (; o + 4 <= out_channels; o += 4) {
    const int16_t* w0 = w + o * k;
    const int16_t* w1 = w0 + k;
    const int16_t* w2 = w1 + k;
    const int16_t* w3 = w2 + k;
    for (int64_t p = 0; p < np; ++p) {
      const int16_t* xp = x + p * k;
      int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int64_t j = 0; j < k; ++j) {
        const int32_t v = xp[j];
        s0 += v * w0[j];
        s1 += v * w1[j];
        s2 += v * w2[j];
        s3 += v * w3[j];
      }
      acc[o * np + p] = s0;
      acc[(o + 1) * np + p] = s1;
      acc[(o + 2) * np + p] = s2;
      acc[(o + 3) * np + p] = s3;
    }
  }
  for (; o < out_channels; ++o) {
    const int16_t* w0 = w + o * k;
    for (int64_t p = 0; p < np; ++p) {
      const int16_t* xp = x + p * k;
      int32_t s0 = 0;
      for (int64_t j = 0; j < k; ++j) s0 += int32_t(xp[j]) * w0[j];
      acc[o * np + p] = s0;
    }
  }
}

// out[p] = round((acc[p] * unit + bias) * m): one output channel to the tensor's scale. Build
// bounds |acc * unit + bias| below 2^31.
BPNAS_VECTOR_CLONES void RequantizeRow(const int32_t* __restrict acc, int64_t n, int32_t unit, int32_t bias,
                                       Dyadic m, int32_t* __restrict out) {
  for (int64_t p = 0; p < n; ++p) out[p] = int32_t(ApplyDyadic(acc[p] * unit + bias, m));
}

// out[i] = round(a[i] * ma) + round(b[i] * mb).
BPNAS_VECTOR_CLONES void AddRow(const int32_t* __restrict a, const int32_t* __restrict b, int64_t n,
                                Dyadic ma, Dyadic mb, int32_t* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = int32_t(ApplyDyadic(a[i], ma) + ApplyDyadic(b[i], mb));
}

}  // namespace

// Per thread: every live tensor, and the scratch of a conv. Buffers return to a pool when their
// tensor's last reader has run, so a deep network needs a few tensors' memory, not one per node.
struct IntegerModel::Workspace {
  std::vector<std::vector<int32_t>> tensors;  // per tensor index
  std::vector<std::vector<int32_t>> pool;
  std::vector<int16_t> codes;    // a conv's input codes, zero-padded, channels last
  std::vector<int16_t> plane;    // one channel's codes
  std::vector<int16_t> patches;  // an im2col tile [pixels][k_padded]
  std::vector<int32_t> sums;     // its dot products [out][pixels]

  std::vector<int32_t> Take(int64_t n) {
    std::vector<int32_t> v;
    if (!pool.empty()) {
      v = std::move(pool.back());
      pool.pop_back();
    }
    v.resize(size_t(n));
    return v;
  }
  void Release(int t) {
    pool.push_back(std::move(tensors[size_t(t)]));
    tensors[size_t(t)] = {};
  }
};

absl::StatusOr<IntegerModel> IntegerModel::Build(const QuantizedModel& model) {
  BPNAS_ASSIGN_OR_RETURN(ModelLayout layout, ValidateModel(model));
  const auto& norm = model.input();
  for (float m : norm.mean()) {
    if (m != 0)
      return absl::UnimplementedError("integer inference: input.mean other than 0 is not supported");
  }
  for (float s : norm.std()) {
    if (s != 1) return absl::UnimplementedError("integer inference: input.std other than 1 is not supported");
  }
  IntegerModel net;
  net.layout_ = layout;
  net.num_classes_ = int(model.num_classes());
  net.tensors_.push_back({double(norm.pixel_scale()), 255});
  const int num_nodes = model.nodes_size();

  // Liveness: the last step that reads each tensor (the logits are never released).
  std::vector<int> last_reader(size_t(num_nodes) + 1, -1);
  for (int i = 0; i < num_nodes; ++i) {
    for (int from : layout.inputs[size_t(i)]) last_reader[size_t(from + 1)] = i;
  }
  int64_t live = layout.input.numel(), peak = live;

  for (int i = 0; i < num_nodes; ++i) {
    const Node& n = model.nodes(i);
    Step step;
    step.op = n.op();
    for (int from : layout.inputs[size_t(i)]) step.inputs.push_back(from + 1);
    const TensorRange in = net.tensors_[size_t(step.inputs[0])];
    const TensorShape& in_shape =
        step.inputs[0] == 0 ? layout.input : layout.outputs[size_t(step.inputs[0] - 1)];
    const TensorShape& out_shape = layout.outputs[size_t(i)];
    TensorRange out = in;
    switch (n.op()) {
      case Node::CONV2D:
      case Node::LINEAR: {
        const QuantizedConv& q = n.conv();
        Conv c;
        c.linear = n.op() == Node::LINEAR;
        c.in_channels = c.linear ? in_shape.numel() : int64_t(q.in_channels());
        c.out_channels = q.out_channels();
        c.kernel = c.linear ? 1 : q.kernel();
        c.stride = c.linear ? 1 : q.stride();
        c.padding = c.linear ? 0 : q.padding();
        c.k = c.in_channels * c.kernel * c.kernel;
        c.k_padded = (c.k + 15) / 16 * 16;
        c.activation_max = (1 << q.activation_bits()) - 1;
        const double step_size = double(q.activation_scale());
        // Ma >= 2^29: every v >= 1 gives at least 2^29 > 2^b - 1 codes, as it would with any larger
        // multiplier, so the cap changes no code.
        BPNAS_ASSIGN_OR_RETURN(c.activation, Multiplier(std::min(in.scale / step_size, std::ldexp(1.0, 29)),
                                                        in.bound, n, i, "activation multiplier"));
        std::vector<int8_t> codes(size_t(c.out_channels * c.k));
        BPNAS_RETURN_IF_ERROR(
            UnpackCodes(q.weight_packed(), int(q.weight_bits()), int64_t(codes.size()), codes.data()));
        c.weights.assign(size_t(c.out_channels * c.k_padded), 0);
        std::vector<double> acc_scale(size_t(c.out_channels));
        std::vector<int64_t> acc_bound(size_t(c.out_channels));
        c.bias.assign(size_t(c.out_channels), 0);
        c.accumulator_unit.assign(size_t(c.out_channels), 1);
        double range = 0;
        for (int64_t o = 0; o < c.out_channels; ++o) {
          int64_t abs_sum = 0;
          // The file's [out][in][ky][kx] becomes [out][ky][kx][in], the order of the patches (below).
          for (int64_t ch = 0, j = 0; ch < c.in_channels; ++ch) {
            for (int64_t kk = 0; kk < c.kernel * c.kernel; ++kk, ++j) {
              const int8_t w = codes[size_t(o * c.k + j)];
              c.weights[size_t(o * c.k_padded + kk * c.in_channels + ch)] = w;
              abs_sum += std::abs(int(w));
            }
          }
          // The accumulator's unit is step * weight_scale; at low bits it is coarse, so the bias joins
          // the accumulator 2^g times finer: acc * 2^g + bias_int, g as large as int32 allows.
          const double unit = step_size * double(q.weight_scales(q.weight_scales_size() == 1 ? 0 : int(o)));
          const double bias_units = q.bias_size() > 0 ? double(q.bias(int(o))) / unit : 0.0;
          if (!(std::fabs(bias_units) < double(kInt32Max))) {
            return NodeError(absl::StatusCode::kOutOfRange, n, i,
                             absl::StrCat("bias ", q.bias(int(o)), " of channel ", o, " is ", bias_units,
                                          " accumulator units: it does not fit int32"));
          }
          const double products = double(abs_sum) * c.activation_max;
          int g = 0;
          while (g < 30 && std::ldexp(products + std::fabs(bias_units) + 1.0, g + 1) <= double(kInt32Max))
            ++g;
          c.accumulator_unit[size_t(o)] = int32_t{1} << g;
          const double sacc = std::ldexp(unit, -g);
          acc_scale[size_t(o)] = sacc;
          c.bias[size_t(o)] = int32_t(std::llround(std::ldexp(bias_units, g)));
          const int64_t bound =
              abs_sum * c.activation_max * (int64_t{1} << g) + std::abs(int64_t(c.bias[size_t(o)]));
          if (bound > kInt32Max) {
            return NodeError(absl::StatusCode::kOutOfRange, n, i,
                             absl::StrCat("the accumulator of channel ", o, " can reach ", bound,
                                          ": more than int32 holds"));
          }
          acc_bound[size_t(o)] = bound;
          range = std::max(range, double(bound) * sacc);
        }
        out.scale = range > 0 ? PowerOfTwoAtLeast(std::ldexp(range, -kIntegerTensorBits)) : 1.0;
        out.bound = 0;
        c.requantize.resize(size_t(c.out_channels));
        for (int64_t o = 0; o < c.out_channels; ++o) {
          const double m = acc_scale[size_t(o)] / out.scale;
          BPNAS_ASSIGN_OR_RETURN(c.requantize[size_t(o)],
                                 Multiplier(m, acc_bound[size_t(o)], n, i, "requantization multiplier"));
          out.bound =
              std::max(out.bound, RequantizedBound(acc_bound[size_t(o)], c.requantize[size_t(o)].value()));
        }
        if (!c.linear) {
          const int64_t hp = in_shape.height + 2 * c.padding, wp = in_shape.width + 2 * c.padding;
          net.max_codes_ = std::max(net.max_codes_, c.in_channels * hp * wp);
          net.max_plane_ = std::max(net.max_plane_, in_shape.height * in_shape.width);
          const int64_t pixels =
              std::max<int64_t>(1, std::min(out_shape.height * out_shape.width, kTileCodes / c.k_padded));
          net.max_patch_rows_ = std::max(net.max_patch_rows_, pixels * c.k_padded);
          net.max_sums_ = std::max(net.max_sums_, pixels * c.out_channels);
        } else {
          net.max_codes_ = std::max(net.max_codes_, c.k_padded);
          net.max_sums_ = std::max(net.max_sums_, c.out_channels);
        }
        step.conv = int(net.convs_.size());
        net.convs_.push_back(std::move(c));
        break;
      }
      case Node::RELU:
        break;
      case Node::PAD_SHORTCUT:
        step.stride = n.shortcut().stride();
        step.pad_before = n.shortcut().pad_before();
        break;
      case Node::ADD: {
        const TensorRange other = net.tensors_[size_t(step.inputs[1])];
        // Both inputs to `scale`; returns the bound of the sum, or -1 where it does not fit int32.
        auto add_at = [&](double scale) -> absl::StatusOr<int64_t> {
          BPNAS_ASSIGN_OR_RETURN(step.first, Multiplier(in.scale / scale, in.bound, n, i, "add multiplier"));
          BPNAS_ASSIGN_OR_RETURN(step.second,
                                 Multiplier(other.scale / scale, other.bound, n, i, "add multiplier"));
          const int64_t a = RequantizedBound(in.bound, step.first.value());
          const int64_t b = RequantizedBound(other.bound, step.second.value());
          return a > kInt32Max || b > kInt32Max || a + b > kInt32Max ? -1 : a + b;
        };
        // The finer of the two scales keeps every bit (and is exact: the multipliers are >= 1) where
        // the sum fits int32; else a scale for the sum of the two ranges.
        out.scale = std::min(in.scale, other.scale);
        int64_t bound = -1;
        if (std::max(in.scale, other.scale) / out.scale < std::ldexp(1.0, kIntegerTensorBits)) {
          BPNAS_ASSIGN_OR_RETURN(bound, add_at(out.scale));
        }
        if (bound < 0) {
          const double range = double(in.bound) * in.scale + double(other.bound) * other.scale;
          out.scale = range > 0 ? PowerOfTwoAtLeast(std::ldexp(range, -kIntegerTensorBits)) : 1.0;
          BPNAS_ASSIGN_OR_RETURN(bound, add_at(out.scale));
          if (bound < 0) return NodeError(absl::StatusCode::kInternal, n, i, "the sum does not fit int32");
        }
        out.bound = bound;
        break;
      }
      case Node::GLOBAL_AVG_POOL: {
        const int64_t area = in_shape.height * in_shape.width;
        BPNAS_ASSIGN_OR_RETURN(step.first, Multiplier(1.0 / double(area), in.bound, n, i, "pool multiplier"));
        out.bound = RequantizedBound(in.bound * area, step.first.value());
        break;
      }
      default:  // ValidateModel admits no other op
        return NodeError(absl::StatusCode::kInternal, n, i, "unknown op");
    }
    if (out.bound > kInt32Max) {  // the choices above keep every bound near 2^29..2^31
      return NodeError(absl::StatusCode::kInternal, n, i,
                       absl::StrCat("integer bound ", out.bound, " does not fit int32"));
    }
    net.tensors_.push_back(out);
    live += out_shape.numel();
    peak = std::max(peak, live);
    // Release what no later step reads: inputs read here for the last time, and an output nothing
    // reads (except the logits).
    std::vector<int> candidates = step.inputs;
    if (i + 1 < num_nodes) candidates.push_back(i + 1);
    for (int t : candidates) {
      const bool done = t == i + 1 ? last_reader[size_t(t)] < 0 : last_reader[size_t(t)] == i;
      if (done && std::find(step.release.begin(), step.release.end(), t) == step.release.end()) {
        step.release.push_back(t);
        live -= t == 0 ? layout.input.numel() : layout.outputs[size_t(t - 1)].numel();
      }
    }
    net.steps_.push_back(std::move(step));
  }
  const int64_t bytes =
      peak * 4 + (net.max_codes_ + net.max_patch_rows_ + net.max_plane_) * 2 + net.max_sums_ * 4;
  if (bytes > kMaxWorkspaceBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("integer inference: the model needs ", bytes >> 20,
                                                     " MiB per image; at most ", kMaxWorkspaceBytes >> 20));
  }
  return net;
}

void IntegerModel::RunConv(const Conv& c, const TensorShape& in_shape, const TensorShape& out_shape,
                           const int32_t* in, int32_t* out, Workspace* ws) const {
  int16_t* codes = ws->codes.data();
  int32_t* sums = ws->sums.data();
  if (c.linear) {
    QuantizeRow(in, c.k, c.activation, c.activation_max, codes);
    std::fill(codes + c.k, codes + c.k_padded, int16_t{0});
    DotTile(c.weights.data(), c.out_channels, codes, 1, c.k_padded, sums);
    for (int64_t o = 0; o < c.out_channels; ++o) {
      RequantizeRow(sums + o, 1, c.accumulator_unit[size_t(o)], c.bias[size_t(o)], c.requantize[size_t(o)],
                    out + o);
    }
    return;
  }
  // Codes of the zero-padded input, channels last: [H + 2p][W + 2p][C]. Padding is code 0 (the
  // real value 0).
  const int64_t h = in_shape.height, w = in_shape.width, channels = c.in_channels;
  const int64_t hp = h + 2 * c.padding, wp = w + 2 * c.padding;
  if (c.padding > 0) std::fill(codes, codes + channels * hp * wp, int16_t{0});
  int16_t* plane = ws->plane.data();
  for (int64_t ch = 0; ch < channels; ++ch) {
    QuantizeRow(in + ch * h * w, h * w, c.activation, c.activation_max, plane);
    for (int64_t y = 0; y < h; ++y) {
      int16_t* dst = codes + ((y + c.padding) * wp + c.padding) * channels + ch;
      const int16_t* src = plane + y * w;
      for (int64_t x = 0; x < w; ++x) dst[x * channels] = src[x];
    }
  }
  // im2col over tiles of output pixels: a row of k_padded codes per pixel, [ky][kx][C] (for one ky
  // the kernel's columns are kernel * C adjacent codes), then the dot products of the tile against
  // every weight row, then each channel's row requantized.
  const int64_t out_w = out_shape.width, pixels = out_shape.height * out_shape.width;
  const int64_t tile = std::max<int64_t>(1, std::min(pixels, kTileCodes / c.k_padded));
  const int64_t run = c.kernel * channels;
  int16_t* patches = ws->patches.data();
  for (int64_t p0 = 0; p0 < pixels; p0 += tile) {
    const int64_t np = std::min(tile, pixels - p0);
    for (int64_t p = 0; p < np; ++p) {
      const int64_t oy = (p0 + p) / out_w, ox = (p0 + p) % out_w;
      int16_t* row = patches + p * c.k_padded;
      for (int64_t ky = 0; ky < c.kernel; ++ky) {
        std::copy_n(codes + ((oy * c.stride + ky) * wp + ox * c.stride) * channels, run, row + ky * run);
      }
      std::fill(row + c.k, row + c.k_padded, int16_t{0});
    }
    DotTile(c.weights.data(), c.out_channels, patches, np, c.k_padded, sums);
    for (int64_t o = 0; o < c.out_channels; ++o) {
      RequantizeRow(sums + o * np, np, c.accumulator_unit[size_t(o)], c.bias[size_t(o)],
                    c.requantize[size_t(o)], out + o * pixels + p0);
    }
  }
}

void IntegerModel::RunImage(const uint8_t* pixels, int32_t* logits, Workspace* ws) const {
  ws->tensors.resize(steps_.size() + 1);
  std::vector<int32_t>& input = ws->tensors[0] = ws->Take(layout_.input.numel());
  for (int64_t j = 0; j < layout_.input.numel(); ++j) input[size_t(j)] = pixels[j];
  for (size_t i = 0; i < steps_.size(); ++i) {
    const Step& s = steps_[i];
    const TensorShape& out_shape = layout_.outputs[i];
    const TensorShape& in_shape = s.inputs[0] == 0 ? layout_.input : layout_.outputs[size_t(s.inputs[0] - 1)];
    std::vector<int32_t> out = ws->Take(out_shape.numel());
    const int32_t* x = ws->tensors[size_t(s.inputs[0])].data();
    int32_t* y = out.data();
    const int64_t n = out_shape.numel();
    switch (s.op) {
      case Node::CONV2D:
      case Node::LINEAR:
        RunConv(convs_[size_t(s.conv)], in_shape, out_shape, x, y, ws);
        break;
      case Node::RELU:
        for (int64_t j = 0; j < n; ++j) y[j] = std::max(x[j], 0);
        break;
      case Node::ADD: {
        const int32_t* x2 = ws->tensors[size_t(s.inputs[1])].data();
        AddRow(x, x2, n, s.first, s.second, y);
        break;
      }
      case Node::PAD_SHORTCUT: {
        std::fill(y, y + n, 0);
        const int64_t plane = out_shape.height * out_shape.width;
        for (int64_t ch = 0; ch < in_shape.channels; ++ch) {
          int32_t* dst = y + (ch + s.pad_before) * plane;
          for (int64_t oy = 0; oy < out_shape.height; ++oy) {
            const int32_t* src = x + (ch * in_shape.height + oy * s.stride) * in_shape.width;
            for (int64_t ox = 0; ox < out_shape.width; ++ox)
              dst[oy * out_shape.width + ox] = src[ox * s.stride];
          }
        }
        break;
      }
      case Node::GLOBAL_AVG_POOL: {
        const int64_t area = in_shape.height * in_shape.width;
        for (int64_t ch = 0; ch < in_shape.channels; ++ch) {
          int64_t sum = 0;
          for (int64_t j = 0; j < area; ++j) sum += x[ch * area + j];
          y[ch] = int32_t(ApplyDyadicWide(sum, s.first));
        }
        break;
      }
      default:
        break;
    }
    ws->tensors[i + 1] = std::move(out);
    for (int t : s.release) ws->Release(t);
  }
  const std::vector<int32_t>& last = ws->tensors.back();
  std::copy(last.begin(), last.begin() + num_classes_, logits);
  ws->Release(int(steps_.size()));
}

void IntegerModel::Run(const uint8_t* pixels, int64_t count, int32_t* logits, int threads) const {
  if (count <= 0) return;
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<int64_t>(threads, count));
  auto work = [&](int64_t begin, int64_t end) {
    Workspace ws;
    ws.codes.resize(size_t(max_codes_));
    ws.patches.resize(size_t(max_patch_rows_));
    ws.sums.resize(size_t(max_sums_));
    ws.plane.resize(size_t(max_plane_));
    for (int64_t i = begin; i < end; ++i) {
      RunImage(pixels + i * input_size(), logits + i * num_classes_, &ws);
    }
  };
  if (threads == 1) {
    work(0, count);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    const int64_t begin = count * t / threads, end = count * (t + 1) / threads;
    pool.emplace_back(work, begin, end);
  }
  for (auto& th : pool) th.join();
}

}  // namespace bpnas
