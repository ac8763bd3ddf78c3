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
// The step comparisons run as interleaved rounds (one of each variant per round) and report the
// median of per-round ratios: this VM's speed drifts by tens of percent over a minute, which
// sequential benchmarks turn into ratio noise. Layer micro-benchmarks use Google Benchmark.
//
// Flags: --batch N (128), --width W (1.0), --threads T (all cores), --rounds R (12),
//        --naive-rounds R (3), --profile VARIANT (run only fp32 | fixed4 | wstep | astep | naive, for
//        --profile-steps N steps, and exit: for a profiler; --trace FILE adds a Chrome trace of the
//        operators), plus Google Benchmark flags (e.g. --benchmark_filter=none).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/nn/functional.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include "common/memory.h"
#include "worker/engine/barrier.h"
#include "worker/engine/data.h"
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
    for (size_t i = 0; i < q.weight_bits.size(); ++i)
      if (q.weight_bits[i] == pin_bits) wi = int(i);
    for (size_t i = 0; i < q.activation_bits.size(); ++i)
      if (q.activation_bits[i] == pin_bits) ai = int(i);
    for (auto l : f.net->searchable_layers()) l->Pin(wi, ai);
  } else {
    SetFeasibleStart(f.net, f.plan.cost_model, f.plan.budget, 0.95);
  }
  f.net->train();
  f.x = torch::rand({g_batch, 1, 28, 28});
  f.y = torch::randint(0, 10, {g_batch}, torch::kLong);
  f.wopt = std::make_unique<torch::optim::SGD>(f.net->WeightParameters(),
                                               torch::optim::SGDOptions(0.01).momentum(0.9));
  f.aopt =
      std::make_unique<torch::optim::Adam>(f.net->ArchitectureParameters(), torch::optim::AdamOptions(0.01));
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
  auto prob1 = Prob1RegularizerStacked(f.net->StackedWeightProbs(), f.net->StackedActivationProbs());
  const auto& sp = f.plan.spec.search();  // normalized: the engine's defaults
  auto loss = ce + BudgetBarrier(ratio, 100, sp.lower_band(), sp.budget_target()) + prob1;
  loss.backward();
  f.aopt->step();
}

// Reading the whole Fashion-MNIST package (60k + 10k images, gzip IDX) into tensors.
void BM_LoadFashionMnist(benchmark::State& st) {
  for (auto _ : st) {
    auto splits = LoadMnistFolder(kDefaultFashionMnistDir);
    if (!splits.ok()) {
      st.SkipWithError(std::string(splits.status().message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(splits->train.images.data_ptr());
  }
}

// Micro: one layer's activation mixture (K = 4) forward + backward vs its 3x3 convolution,
// on the stage-1 activation shape of resnet20 width 1.
void BM_ActMixtureLayer(benchmark::State& st) {
  // Arg 0: probability gradient or not; arg 1: branches (1 = fixed bits, 4 = {2,3,4,8}).
  auto x = torch::randn({g_batch, int64_t(16 * g_width), 28, 28}).requires_grad_(true);
  const int k = int(st.range(1));
  const std::vector<int> all_bits = {2, 3, 4, 8};
  const std::vector<double> all_clips = {1.0, 1.5, 2.0, 3.0};
  const std::vector<int> bits(all_bits.end() - k, all_bits.end());
  const std::vector<double> clips(all_clips.end() - k, all_clips.end());
  auto logits = torch::zeros({k}).requires_grad_(st.range(0) != 0);
  auto g = torch::ones_like(x);
  for (auto _ : st) {
    auto y = ActivationMixture(x, torch::softmax(logits, 0), bits, clips);
    auto grads = logits.requires_grad() ? torch::autograd::grad({y}, {x, logits}, {g})
                                        : torch::autograd::grad({y}, {x}, {g});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
}
// The same pass as a ReLU (what an FP32 network pays for its activations): the mixture's floor.
void BM_ReluLayer(benchmark::State& st) {
  auto x = torch::randn({g_batch, int64_t(16 * g_width), 28, 28}).requires_grad_(true);
  auto g = torch::ones_like(x);
  for (auto _ : st) {
    auto y = torch::relu(x);
    auto grads = torch::autograd::grad({y}, {x}, {g});
    benchmark::DoNotOptimize(grads[0].data_ptr());
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

// Steps measured in interleaved rounds (fp32, fixed4, weight step, arch step, naive step, ...),
// so that drift in the machine's speed hits every variant alike; ratios are medians over rounds of
// the per-round ratio.
void PairedStepRatios(int rounds, int naive_rounds) {
  auto fp32 = Make(false, true, 0);
  auto fixed4 = Make(true, true, 4);
  auto super = Make(true, true, 0);
  auto naive = Make(true, false, 0);
  auto time_ms = [](auto&& fn) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  // Warm up every variant (allocator, oneDNN primitive caches).
  for (int i = 0; i < 2; ++i) {
    WeightStep(fp32);
    WeightStep(fixed4);
    WeightStep(super);
    ArchStep(super);
  }
  WeightStep(naive);
  ArchStep(naive);
  std::map<std::string, std::vector<double>> ms, ratio;
  for (int r = 0; r < rounds; ++r) {
    const double base = time_ms([&] { WeightStep(fp32); });
    const double f4 = time_ms([&] { WeightStep(fixed4); });
    const double w = time_ms([&] { WeightStep(super); });
    const double a = time_ms([&] { ArchStep(super); });
    ms["fp32_step"].push_back(base);
    ms["fixed4_step"].push_back(f4);
    ms["supernet_wstep"].push_back(w);
    ms["supernet_astep"].push_back(a);
    ms["supernet_step"].push_back(w + a);
    ratio["fixed4_step"].push_back(f4 / base);
    ratio["supernet_wstep"].push_back(w / base);
    ratio["supernet_astep"].push_back(a / base);
    ratio["supernet_step"].push_back((w + a) / base);
    ratio["supernet_step_per_sample"].push_back((w + a) / (2 * base));
    if (r < naive_rounds) {
      const double n = time_ms([&] {
        WeightStep(naive);
        ArchStep(naive);
      });
      ms["naive_step"].push_back(n);
      ratio["naive_step"].push_back(n / base);
      ratio["naive_over_fused_step"].push_back(n / (w + a));
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : (v[v.size() / 2] + v[(v.size() - 1) / 2]) / 2;
  };
  std::printf("\npaired step timings: resnet20 width %.2f, batch %d, %d threads, %d rounds (naive: %d)\n",
              g_width, g_batch, at::get_num_threads(), rounds, naive_rounds);
  for (const char* n :
       {"fp32_step", "fixed4_step", "supernet_wstep", "supernet_astep", "supernet_step", "naive_step"}) {
    if (ms.count(n)) std::printf("  %-28s median %8.1f ms\n", n, median(ms[n]));
  }
  std::printf("ratios (median of per-round ratios):\n");
  for (const char* n : {"fixed4_step", "supernet_wstep", "supernet_astep", "supernet_step",
                        "supernet_step_per_sample", "naive_step", "naive_over_fused_step"}) {
    if (ratio.count(n)) std::printf("  %-28s %6.2fx\n", n, median(ratio[n]));
  }
  std::printf(
      "  (supernet_step = weight step + architecture step on two batches, vs one fp32 step on one batch;\n"
      "   per_sample divides by two fp32 steps: the same number of samples.)\n");
}

// One variant in a loop, nothing else: a profiler then sees only that variant's step.
int ProfileOnly(const std::string& variant, int steps, const std::string& trace) {
  const bool fp32 = variant == "fp32", fixed4 = variant == "fixed4";
  const bool wstep = variant == "wstep", astep = variant == "astep", naive = variant == "naive";
  if (!fp32 && !fixed4 && !wstep && !astep && !naive) {
    std::fprintf(stderr, "--profile: unknown variant '%s' (fp32, fixed4, wstep, astep, naive)\n",
                 variant.c_str());
    return 2;
  }
  auto f = Make(!fp32, !naive, fixed4 ? 4 : 0);
  auto step = [&] {
    if (astep)
      ArchStep(f);
    else
      WeightStep(f);
    if (naive) ArchStep(f);
  };
  for (int i = 0; i < 2; ++i) step();
  if (!trace.empty()) {  // LibTorch's operator profiler: a Chrome trace of `steps` steps
    torch::autograd::profiler::RecordProfile guard(trace);
    for (int i = 0; i < steps; ++i) step();
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %d steps, %.1f ms per step\n", variant.c_str(), steps, ms / std::max(steps, 1));
  return 0;
}

}  // namespace
}  // namespace bpnas

int main(int argc, char** argv) {
  bpnas::TuneAllocatorForTraining();
  std::vector<char*> rest = {argv[0]};
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  int rounds = 12, naive_rounds = 3, profile_steps = 20;
  std::string profile, trace;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--batch") && i + 1 < argc)
      bpnas::g_batch = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--width") && i + 1 < argc)
      bpnas::g_width = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--naive-rounds") && i + 1 < argc)
      naive_rounds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--profile") && i + 1 < argc)
      profile = argv[++i];
    else if (!std::strcmp(argv[i], "--trace") && i + 1 < argc)
      trace = argv[++i];
    else if (!std::strcmp(argv[i], "--profile-steps") && i + 1 < argc)
      profile_steps = std::atoi(argv[++i]);
    else
      rest.push_back(argv[i]);
  }
  {
    bpnas::v1::JobSpec spec;
    spec.set_threads(threads);
    bpnas::ConfigureTorchForTraining(spec);  // the same settings as a search
  }
  using namespace bpnas;
  if (!profile.empty()) return ProfileOnly(profile, profile_steps, trace);
  benchmark::RegisterBenchmark("load_fashion_mnist", BM_LoadFashionMnist)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("layer_conv3x3_fwd_bwd", BM_ConvLayer)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("layer_relu_fwd_bwd", BM_ReluLayer)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("layer_act_mixture_fwd_bwd", BM_ActMixtureLayer)
      ->ArgNames({"prob_grad", "k"})
      ->Args({0, 1})
      ->Args({0, 4})
      ->Args({1, 4})
      ->Unit(benchmark::kMillisecond);
  int n = int(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  PairedStepRatios(rounds, naive_rounds);
  benchmark::Shutdown();
  return 0;
}
