// bpnas-integer-bench: images per second of the integer-only engine (artifact/integer_inference.h)
// on a random model of a built-in graph, on one thread and on --threads threads in the same run
// (the ratio is the threads' speed-up), and the time that makes for 10,000 images.
//
// Flags: --model resnet20|tiny (resnet20), --width W (0.5), --size S (28: S x S x 1 images),
//        --bits B (4: weights and activations of every layer), --images N (2000), --threads T (2).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "artifact/builder.h"
#include "artifact/integer_inference.h"
#include "spec/graph.h"

namespace {

double Seconds(const bpnas::IntegerModel& net, const std::vector<uint8_t>& px, int64_t n, int threads) {
  std::vector<int32_t> logits(size_t(n * net.num_classes()));
  const auto t0 = std::chrono::steady_clock::now();
  net.Run(px.data(), n, logits.data(), threads);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "resnet20";
  double width = 0.5;
  int size = 28, bits = 4, threads = 2;
  int64_t images = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--model") {
      model = value;
    } else if (flag == "--width") {
      width = std::atof(value);
    } else if (flag == "--size") {
      size = std::atoi(value);
    } else if (flag == "--bits") {
      bits = std::atoi(value);
    } else if (flag == "--images") {
      images = std::atoll(value);
    } else if (flag == "--threads") {
      threads = std::atoi(value);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  auto graph = bpnas::BuildModelGraph(
      {.name = model, .width_multiplier = width, .input_height = size, .input_width = size});
  if (!graph.ok()) {
    std::fprintf(stderr, "%s\n", std::string(graph.status().message()).c_str());
    return 2;
  }
  auto m = bpnas::MakeRandomModel(*graph, {.weight_bits = bits, .activation_bits = bits});
  auto net = m.ok() ? bpnas::IntegerModel::Build(*m) : m.status();
  if (!net.ok()) {
    std::fprintf(stderr, "%s\n", std::string(net.status().message()).c_str());
    return 1;
  }
  std::mt19937 rng(1);
  std::vector<uint8_t> px(size_t(images * net->input_size()));
  for (auto& p : px) p = uint8_t(rng() & 255);
  double macs = 0;
  for (const auto& l : graph->Layers()) macs += l.macs;
  Seconds(*net, px, std::min<int64_t>(images, 50), threads);  // warm up
  const double one = Seconds(*net, px, images, 1);
  const double many = Seconds(*net, px, images, threads);
  std::printf("%s width %g, %dx%d, %d bits: %.2f MMAC per image\n", model.c_str(), width, size, size, bits,
              macs / 1e6);
  std::printf("1 thread:   %8.0f images/s, %.2f GMAC/s, 10k images in %.2f s\n", double(images) / one,
              macs * double(images) / one / 1e9, one * 1e4 / double(images));
  std::printf("%d threads:  %8.0f images/s, %.2f GMAC/s, 10k images in %.2f s (speed-up %.2f)\n", threads,
              double(images) / many, macs * double(images) / many / 1e9, many * 1e4 / double(images),
              one / many);
  return 0;
}
