// bpnas-bench: the cost of a supernet training step relative to a plain FP32 step of the same
// resnet20 at the same batch, all measured in this run.
//
//   fp32_step           one SGD step of the unquantized network (the baseline)
//   fixed4_step         one step of the network with every layer fixed at 4 bits (QAT)
//   supernet_wstep      the search's weight step: fused mixtures, logits frozen
//   supernet_astep      the search's architecture step: fused mixtures, weights frozen,
//                       cross-entropy + barrier + Prob-1
//   supernet_step       weight step + architecture step (one search step, two batches)
//   naive_step          the same search step with the per-branch torch expressions
//
// Flags: --batch N (128), --width W (1.0), --threads T (all cores), plus Google Benchmark flags.
#include <benchmark/benchmark.h>

#include <ATen/Parallel.h>
#include <torch/nn/functional.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "common/memory.h"
#include "worker/engine/barrier.h"
#include "worker/engine/quant_ops.h"
#include "worker/engine/search.h"

namespace bpnas {
namespace {

int g_batch = 128;
double g_width = 1.0;

struct Fixture {
  JobPlan plan;
  Supernet net{nullptr};
  torch::Tensor x, y;
  std::unique_ptr<torch::optim::SGD> wopt;
  std::unique_ptr<torch::optim::Adam> aopt;
};

Fixture Make(bool quantize, bool fused, int pin_bits) {
  bpnas::v1::JobSpec spec;
  spec.mutable_model()->set_name("resnet20");
  spec.mutable_model()->set_width_multiplier(g_width);
  spec.mutable_dataset()->set_kind("synthetic");
  spec.mutable_dataset()->set_synthetic_size(28);
  spec.mutable_dataset()->set_synthetic_classes(10);
  spec.mutable_constraint()->set_max_relative_to_uniform_bits(4);
  Fixture f;
  f.plan = PlanJob(spec).value();
  QuantOptions q = QuantOptionsFor(f.plan.spec);
  q.quantize = quantize;
  q.fused = fused;
  torch::manual_seed(1);
  f.net = Supernet(f.plan.graph, q);
  if (pin_bits > 0) {
    int wi = 0, ai = 0;
    for (size_t i = 0; i < q.weight_bits.size(); ++i) if (q.weight_bits[i] == pin_bits) wi = int(i);
    for (size_t i = 0; i < q.activation_bits.size(); ++i) if (q.activation_bits[i] == pin_bits) ai = int(i);
    for (auto l : f.net->searchable_layers()) l->Pin(wi, ai);
  } else {
    SetFeasibleStart(f.net, f.plan.cost_model, f.plan.budget, 0.95);
  }
  f.net->train();
  f.x = torch::rand({g_batch, 1, 28, 28});
  f.y = torch::randint(0, 10, {g_batch}, torch::kLong);
  f.wopt = std::make_unique<torch::optim::SGD>(f.net->WeightParameters(),
                                               torch::optim::SGDOptions(0.01).momentum(0.9));
  f.aopt = std::make_unique<torch::optim::Adam>(f.net->ArchitectureParameters(), torch::optim::AdamOptions(0.01));
  return f;
}

void WeightStep(Fixture& f) {
  for (auto p : f.net->ArchitectureParameters()) p.set_requires_grad(false);
  for (auto p : f.net->WeightParameters()) p.set_requires_grad(true);
  f.wopt->zero_grad();
  auto loss = torch::nn::functional::cross_entropy(f.net->forward(f.x), f.y);
  loss.backward();
  f.wopt->step();
}

void ArchStep(Fixture& f) {
  for (auto p : f.net->WeightParameters()) p.set_requires_grad(false);
  for (auto p : f.net->ArchitectureParameters()) p.set_requires_grad(true);
  f.aopt->zero_grad();
  auto ce = torch::nn::functional::cross_entropy(f.net->forward(f.x), f.y);
  auto ratio = ExpectedCostRatio(f.net, f.plan.cost_model, f.plan.budget);
  std::vector<torch::Tensor> wp, ap;
  for (auto l : f.net->searchable_layers()) {
    wp.push_back(l->WeightProbs());
    ap.push_back(l->ActivationProbs());
  }
  auto loss = ce + BarrierPenalty(ratio - 1.0, 100) + BarrierPenalty(0.9 - ratio, 100) + Prob1Regularizer(wp, ap);
  loss.backward();
  f.aopt->step();
}

void BM_Fp32Step(benchmark::State& st) {
  auto f = Make(false, true, 0);
  for (auto _ : st) WeightStep(f);
}
void BM_Fixed4Step(benchmark::State& st) {
  auto f = Make(true, true, 4);
  for (auto _ : st) WeightStep(f);
}
void BM_SupernetWeightStep(benchmark::State& st) {
  auto f = Make(true, true, 0);
  for (auto _ : st) WeightStep(f);
}
void BM_SupernetArchStep(benchmark::State& st) {
  auto f = Make(true, true, 0);
  for (auto _ : st) ArchStep(f);
}
void BM_SupernetStep(benchmark::State& st) {
  auto f = Make(true, true, 0);
  for (auto _ : st) {
    WeightStep(f);
    ArchStep(f);
  }
}
void BM_NaiveSupernetStep(benchmark::State& st) {
  auto f = Make(true, false, 0);
  for (auto _ : st) {
    WeightStep(f);
    ArchStep(f);
  }
}

// Micro: one layer's activation mixture (K = 4) forward + backward vs its 3x3 convolution,
// on the stage-1 activation shape of resnet20 width 1.
void BM_ActMixtureLayer(benchmark::State& st) {
  auto x = torch::relu(torch::randn({g_batch, int64_t(16 * g_width), 28, 28})).requires_grad_(true);
  auto logits = torch::zeros({4}).requires_grad_(st.range(0) != 0);
  for (auto _ : st) {
    auto y = ActivationMixture(x, torch::softmax(logits, 0), {2, 3, 4, 8}, 2.0);
    y.backward(torch::ones_like(y));
  }
}
void BM_ConvLayer(benchmark::State& st) {
  const int64_t c = int64_t(16 * g_width);
  auto x = torch::relu(torch::randn({g_batch, c, 28, 28})).requires_grad_(true);
  auto w = (torch::randn({c, c, 3, 3}) * 0.1).requires_grad_(true);
  for (auto _ : st) {
    auto y = torch::nn::functional::conv2d(x, w, torch::nn::functional::Conv2dFuncOptions().padding(1));
    y.backward(torch::ones_like(y));
  }
}

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type == Run::RT_Iteration) seconds_[r.benchmark_name()] = r.GetAdjustedRealTime();
    }
  }
  void PrintRatios() const {
    auto get = [&](const std::string& prefix) -> double {
      for (const auto& [name, t] : seconds_) if (name.rfind(prefix, 0) == 0) return t;
      return 0;
    };
    const double base = get("fp32_step");
    if (base <= 0) return;
    std::printf("\nratios to fp32_step (batch %d, width %.2f, %d threads), same run:\n", g_batch, g_width,
                at::get_num_threads());
    for (const char* n : {"fixed4_step", "supernet_wstep", "supernet_astep", "supernet_step", "naive_step"}) {
      const double t = get(n);
      if (t > 0) std::printf("  %-16s %.2fx\n", n, t / base);
    }
    const double step = get("supernet_step"), naive = get("naive_step");
    if (step > 0) {
      std::printf("  supernet_step per sample (two batches vs one): %.2fx\n", step / (2 * base));
    }
    if (step > 0 && naive > 0) std::printf("  naive_step / supernet_step: %.2fx\n", naive / step);
  }

 private:
  std::map<std::string, double> seconds_;
};

}  // namespace
}  // namespace bpnas

int main(int argc, char** argv) {
  bpnas::TuneAllocatorForTraining();
  std::vector<char*> rest = {argv[0]};
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) bpnas::g_batch = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--width") && i + 1 < argc) bpnas::g_width = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else rest.push_back(argv[i]);
  }
  at::set_num_threads(threads);
  using namespace bpnas;
  benchmark::RegisterBenchmark("fp32_step", BM_Fp32Step)->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("fixed4_step", BM_Fixed4Step)->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("supernet_wstep", BM_SupernetWeightStep)->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("supernet_astep", BM_SupernetArchStep)->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("supernet_step", BM_SupernetStep)->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("naive_step", BM_NaiveSupernetStep)->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("layer_conv3x3", BM_ConvLayer)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("layer_act_mixture", BM_ActMixtureLayer)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
  int n = int(rest.size());
  benchmark::Initialize(&n, rest.data());
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  benchmark::Shutdown();
  return 0;
}
