// Writes the artifact fuzzer's seed corpus: valid, checksummed models of the built-in graphs from
// MakeRandomModel (small inputs, so that the fuzzer runs them), at several bitwidths, per-channel
// and per-tensor. Generated at run time: no model binary lives in the repository.
//
//   artifact_fuzz_seeds DIR
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "artifact/builder.h"
#include "artifact/model_file.h"
#include "spec/graph.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: artifact_fuzz_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  int written = 0;
  uint64_t seed = 1;
  for (const char* name : {"tiny", "resnet20"}) {
    for (int size : {8, 12}) {
      for (int bits : {2, 4, 8}) {
        for (bool per_channel : {true, false}) {
          bpnas::ModelOptions o;
          o.name = name;
          o.width_multiplier = 0.25;
          o.input_height = o.input_width = size;
          o.input_channels = size == 8 ? 1 : 3;
          o.num_classes = size == 8 ? 10 : 4;
          auto g = bpnas::BuildModelGraph(o);
          if (!g.ok()) return 1;
          auto m = bpnas::MakeRandomModel(*g, {.weight_bits = bits,
                                               .activation_bits = 10 - bits,
                                               .per_channel = per_channel,
                                               .seed = seed++});
          if (!m.ok()) return 1;
          const std::string path =
              absl::StrCat(dir, "/", name, "_", size, "_w", bits, per_channel ? "c" : "t");
          if (!bpnas::WriteModelFile(*m, path).ok()) {
            std::fprintf(stderr, "cannot write %s\n", path.c_str());
            return 1;
          }
          ++written;
        }
      }
    }
  }
  std::printf("%d seed models in %s\n", written, dir.c_str());
  return 0;
}
