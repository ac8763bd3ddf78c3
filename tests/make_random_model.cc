// bpnas_make_random_model: writes a valid random `.bpq` of a built-in graph (MakeRandomModel), for
// tests and benches that need a model of a given bitwidth without training one.
//
//   bpnas_make_random_model --graph resnet20 [--width 0.25] --bits B [--weight-bits W]
//                           [--per-tensor] [--seed S] [--center-logits DATA_DIR] -o MODEL.bpq
//
// --bits sets the activation bits of every layer (the fixed first and last included), and the
// weight bits unless --weight-bits is given.
// --center-logits: a random network gives nearly every image the same class (the last layer's
// bias outweighs what varies between images); this runs the model (bpnas eval's interpreter) on
// the first 1000 training images of the MNIST-style folder DATA_DIR and subtracts each class's
// mean logit from the last layer's bias, so that the predicted class varies from image to image
// and a comparison of runtimes by class means something.
// Exit 0 ok, 2 bad arguments, 1 otherwise.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "artifact/builder.h"
#include "artifact/model_file.h"
#include "common/status.h"
#include "spec/graph.h"
#include "worker/engine/artifact.h"
#include "worker/engine/data.h"

namespace {

int Usage(const std::string& why) {
  std::fprintf(
      stderr,
      "bpnas_make_random_model: %s\n"
      "usage: bpnas_make_random_model --graph resnet20|tiny [--width X] --bits B [--weight-bits W]\n"
      "                               [--per-tensor] [--seed S] [--center-logits DATA_DIR] -o MODEL.bpq\n",
      why.c_str());
  return 2;
}

// See --center-logits above.
absl::Status CenterLogits(const std::string& data_dir, bpnas::v1::QuantizedModel* model) {
  bpnas::v1::DatasetSpec spec;
  spec.set_kind("fashion-mnist");
  spec.set_path(data_dir);
  spec.set_train_limit(1000);
  spec.set_test_limit(1);
  BPNAS_ASSIGN_OR_RETURN(bpnas::DataSplits data, bpnas::LoadDataset(spec, 1));
  BPNAS_ASSIGN_OR_RETURN(torch::Tensor logits, bpnas::RunQuantizedModel(*model, data.train.images));
  const torch::Tensor mean = logits.mean(0).contiguous();
  auto* last = model->mutable_nodes(model->nodes_size() - 1);
  if (last->op() != bpnas::v1::Node::LINEAR) {
    return absl::InvalidArgumentError("--center-logits: the last node is not a linear layer");
  }
  auto* conv = last->mutable_conv();
  if (conv->bias_size() == 0) conv->mutable_bias()->Resize(int(conv->out_channels()), 0.0f);
  for (int k = 0; k < conv->bias_size(); ++k) conv->set_bias(k, conv->bias(k) - mean[k].item<float>());
  model->set_checksum(bpnas::ModelChecksum(*model));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  bpnas::ModelOptions graph;
  bpnas::RandomModelOptions options;
  int weight_bits = 0;
  std::string out, center_data;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bpnas_make_random_model: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    bool ok = true;
    if (arg == "--graph") {
      graph.name = value("--graph");
    } else if (arg == "--width") {
      ok = absl::SimpleAtod(value("--width"), &graph.width_multiplier);
    } else if (arg == "--bits") {
      ok = absl::SimpleAtoi(value("--bits"), &options.activation_bits);
    } else if (arg == "--weight-bits") {
      ok = absl::SimpleAtoi(value("--weight-bits"), &weight_bits);
    } else if (arg == "--per-tensor") {
      options.per_channel = false;
    } else if (arg == "--seed") {
      ok = absl::SimpleAtoi(value("--seed"), &options.seed);
    } else if (arg == "--center-logits") {
      center_data = value("--center-logits");
    } else if (arg == "-o" || arg == "--out") {
      out = value("-o");
    } else {
      return Usage("unknown argument " + arg);
    }
    if (!ok) return Usage("bad value for " + arg);
  }
  if (out.empty()) return Usage("-o MODEL.bpq is required");
  options.weight_bits = weight_bits > 0 ? weight_bits : options.activation_bits;
  auto g = bpnas::BuildModelGraph(graph);
  if (!g.ok()) return Usage(std::string(g.status().message()));
  auto model = bpnas::MakeRandomModel(*g, options);
  if (!model.ok()) return Usage(std::string(model.status().message()));
  if (!center_data.empty()) {
    absl::Status c = CenterLogits(center_data, &*model);
    if (!c.ok()) {
      std::fprintf(stderr, "bpnas_make_random_model: %s\n", std::string(c.message()).c_str());
      return bpnas::ExitCodeFor(c);
    }
  }
  absl::Status w = bpnas::WriteModelFile(*model, out);
  if (!w.ok()) {
    std::fprintf(stderr, "bpnas_make_random_model: %s\n", std::string(w.message()).c_str());
    return bpnas::ExitCodeFor(w);
  }
  return 0;
}
