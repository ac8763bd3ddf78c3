// libFuzzer target over what reads a `.bpq` file from elsewhere: ParseModel (bytes, checksum,
// format, validation), ValidateModel on whatever protobuf parses (a mutated file rarely keeps its
// checksum, so validation is also fed directly), and, for a valid model small enough to run fast,
// building the integer engine (artifact/integer_inference.h) and running it on one image.
//
// Built and run by scripts/fuzz.sh (clang-14, -fsanitize=fuzzer,address,undefined) with a seed
// corpus that fuzz/make_seeds.cc writes from MakeRandomModel.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "artifact/integer_inference.h"
#include "artifact/model_file.h"
#include "artifact/validate.h"
#include "bpnas/v1/model.pb.h"
#include "google/protobuf/stubs/logging.h"

namespace {

// Per execution: a valid model runs only if its work and memory are this small.
constexpr double kMaxMacs = 2e6;
constexpr int64_t kMaxElements = 1 << 18;

bool SmallEnough(const bpnas::v1::QuantizedModel& m, const bpnas::ModelLayout& layout) {
  double macs = 0;
  int64_t elements = layout.input.numel();
  for (int i = 0; i < m.nodes_size(); ++i) {
    const bpnas::TensorShape& out = layout.outputs[size_t(i)];
    elements += out.numel();
    if (m.nodes(i).has_conv()) {
      const auto& c = m.nodes(i).conv();
      macs += double(out.numel()) * double(c.in_channels()) * double(c.kernel()) * double(c.kernel());
    }
  }
  return macs <= kMaxMacs && elements <= kMaxElements;
}

}  // namespace

// Protobuf logs every string field that is not UTF-8 while it refuses the bytes: noise here.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto parsed = bpnas::ParseModel(bytes, "fuzz input");
  bpnas::v1::QuantizedModel model;
  if (parsed.ok()) {
    model = *std::move(parsed);
  } else if (!model.ParseFromArray(data, int(size))) {
    return 0;
  }
  auto layout = bpnas::ValidateModel(model);
  if (!layout.ok() || !SmallEnough(model, *layout)) return 0;
  auto net = bpnas::IntegerModel::Build(model);
  if (!net.ok()) return 0;
  // One image: the input's bytes again, repeated, as pixels.
  std::vector<uint8_t> pixels(size_t(net->input_size()));
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = size > 0 ? data[(i * 7919) % size] : 0;
  std::vector<int32_t> logits(size_t(net->num_classes()));
  net->Run(pixels.data(), 1, logits.data(), 1);
  return 0;
}
