// bpnas-scaling: images/s of a data-parallel search on 2 ranks relative to 1 rank, on one machine,
// with the same threads per rank and the same per-rank batch, and the cost of the per-step
// all-reduce. Both are measured in this run.
//
// What is timed. Each rank runs the real engine: RunJob on a plan from PlanJob (resnet20, BPNAS,
// no warm-up, one search epoch, no fine-tune), so the step is exactly the search's weight step +
// architecture step with their two all-reduces (SyncStep) and nothing written for the benchmark.
// The step rate comes from the search phase's progress events: the time between the event after
// the first kWarmupSteps steps (oneDNN primitive caches, allocator, the ranks falling into step)
// and the last one, divided by the steps in between. A search step consumes two batches (one for
// the weights, one for the logits), so images/s counts both, as the engine's own
// samples_per_second does; the ratio does not depend on that choice.
//
// Ranks are processes, not threads: real workers are processes, and LibTorch's intra-op pool and
// allocator are per process, so threads of one process would share what two workers do not.
// The parent starts every rank as a new process of this binary (internal flag --rank) and only
// collects their results; it never touches LibTorch itself. Rank 0 hosts the rendezvous store on a
// free port and announces the port on its stdout; the parent then starts the other ranks with it.
//
// The all-reduce is also timed in isolation, after the search, between the same two processes:
// the tensors SyncStep reduces (weight gradients + floating-point buffers, then architecture
// gradients + the same buffers), each iteration started at a barrier so that it measures the
// collective rather than one rank waiting for the other.
//
// The machine's speed drifts (other work, a noisy VM), so the 1-rank and 2-rank runs alternate in
// rounds (1 then 2, then 2 then 1, ...) and the speed-up is the median of per-round ratios.
//
// Flags: --width W (0.5), --batch N per rank (128), --steps S search steps per run (12),
//        --rounds R (2), --threads T per rank (1), --data synthetic|fashion-mnist (synthetic),
//        --allreduce-iters K (50). --rank, --world, --round and --store-port are set by the bench
//        for the rank processes it starts.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/memory.h"
#include "common/subprocess.h"
#include "spec/progress.h"
#include "spec/spec.h"
#include "worker/collective.h"
#include "worker/engine/data.h"
#include "worker/engine/search.h"

namespace bpnas {
namespace {

using Clock = std::chrono::steady_clock;

// Steps left out of the timed window at the start of every run: the first step builds oneDNN's
// primitives and grows the heap, and the ranks fall into step at their first all-reduce.
constexpr int kWarmupSteps = 3;

struct BenchOptions {
  double width = 0.5;
  int batch = 128;  // per rank
  int steps = 12;   // search steps per run, warm-up included
  int rounds = 2;
  int threads = 1;  // per rank
  std::string data = "synthetic";
  int allreduce_iters = 50;
};

// Set in a rank's process only (the parent passes them after the user's flags).
struct RankFlags {
  int rank = -1;  // -1: this process is the parent
  int world = 1;
  int round = 0;
  int store_port = 0;  // ranks > 0: where rank 0's rendezvous store listens
};

// What a rank prints on stdout for its parent: rank 0 of several announces its store port, and
// every rank ends with its result.
constexpr char kPortLinePrefix[] = "port ";
constexpr char kResultLinePrefix[] = "result ";

// What one rank measured; travels from the rank to the parent as one line of text.
struct RankResult {
  bool ok = false;
  std::string error;
  int64_t timed_steps = 0;
  double timed_seconds = 0;
  int64_t timed_images = 0;
  // CPU seconds this process used in the timed window (all its threads). Divided by the window,
  // it says how much of a core the rank got. Below its thread count, the rank was either
  // descheduled (other work on the machine, or the other rank on the same core) or blocked in an
  // all-reduce waiting for its peer; Gloo waits without spinning.
  double timed_cpu_seconds = 0;
  // Isolated all-reduce of one step's tensors (2 ranks only).
  double allreduce_ms = 0;
  int allreduce_tensors = 0;
  int64_t allreduce_bytes = 0;
};

std::string Serialize(const RankResult& r) {
  if (!r.ok) {
    std::string msg = r.error;
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    return absl::StrCat("error ", msg, "\n");
  }
  char line[256];
  std::snprintf(line, sizeof(line), "ok %lld %.9f %lld %.9f %.6f %d %lld\n",
                static_cast<long long>(r.timed_steps), r.timed_seconds,
                static_cast<long long>(r.timed_images), r.timed_cpu_seconds, r.allreduce_ms,
                r.allreduce_tensors, static_cast<long long>(r.allreduce_bytes));
  return line;
}

RankResult Deserialize(const std::string& text) {
  RankResult r;
  if (text.rfind("ok ", 0) == 0) {
    long long steps = 0, images = 0, bytes = 0;
    if (std::sscanf(text.c_str(), "ok %lld %lf %lld %lf %lf %d %lld", &steps, &r.timed_seconds, &images,
                    &r.timed_cpu_seconds, &r.allreduce_ms, &r.allreduce_tensors, &bytes) == 7) {
      r.ok = true;
      r.timed_steps = steps;
      r.timed_images = images;
      r.allreduce_bytes = bytes;
      return r;
    }
  }
  if (text.empty()) {
    r.error = "the rank exited without a result";
  } else {
    r.error =
        text.rfind("error ", 0) == 0 ? text.substr(6) : absl::StrCat("unreadable result: \"", text, "\"");
  }
  return r;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return (v[v.size() / 2] + v[(v.size() - 1) / 2]) / 2;
}

// Training samples such that every one of `world` ranks gets exactly `steps` weight batches in
// its single search epoch (RunJob holds out dataset.arch_fraction for the architecture steps and
// shards the rest by rank). Both configurations run the same number of steps per rank.
int64_t TrainSamplesFor(int steps, int batch, int world, double arch_fraction) {
  auto steps_of = [&](int64_t n) {
    const int64_t n_arch = std::max<int64_t>(1, std::llround(double(n) * arch_fraction));
    return ((n - n_arch) / world) / batch;
  };
  int64_t n = int64_t(std::ceil(double(steps) * batch * world / (1.0 - arch_fraction)));
  while (steps_of(n) < steps) n += world;
  while (n > world && steps_of(n - world) >= steps) n -= world;
  return n;
}

absl::StatusOr<JobPlan> MakePlan(const BenchOptions& o, int world) {
  bpnas::v1::JobSpec spec;
  spec.set_name("scaling");
  spec.mutable_model()->set_name("resnet20");
  spec.mutable_model()->set_width_multiplier(o.width);
  auto* d = spec.mutable_dataset();
  d->set_arch_fraction(0.2);
  const int64_t n_train = TrainSamplesFor(o.steps, o.batch, world, d->arch_fraction());
  if (o.data == "fashion-mnist") {
    d->set_kind("fashion-mnist");
    if (n_train > 60000) {
      return absl::InvalidArgumentError(
          absl::StrCat("--steps ", o.steps, " needs ", n_train, " training images; fashion-mnist has 60000"));
    }
    d->set_train_limit(uint32_t(n_train));
    d->set_test_limit(500);  // the evaluation after the search is not timed; keep it short
  } else if (o.data == "synthetic") {
    d->set_kind("synthetic");
    d->set_synthetic_size(28);
    d->set_synthetic_channels(1);
    d->set_synthetic_classes(10);
    d->set_synthetic_train(uint32_t(n_train));
    d->set_synthetic_test(64);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--data must be synthetic or fashion-mnist, got ", o.data));
  }
  spec.mutable_constraint()->set_max_relative_to_uniform_bits(4);
  auto* s = spec.mutable_search();
  s->set_warmup_epochs(0);  // the search step is what data parallelism has to scale
  s->set_epochs(1);
  s->set_batch_size(uint32_t(o.batch));
  spec.mutable_finetune()->set_epochs(0);
  spec.set_ranks(uint32_t(world));
  spec.set_threads(uint32_t(o.threads));
  spec.set_seed(7);
  return PlanJob(spec);
}

// The tensors SyncStep reduces after a weight step and after an architecture step.
std::vector<torch::Tensor> SyncSet(Supernet& net, const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> tensors;
  for (const auto& p : params) tensors.push_back(torch::randn_like(p));
  for (const auto& b : net->buffers()) {
    if (b.is_floating_point()) tensors.push_back(b.detach().clone());
  }
  return tensors;
}

// Median time of one step's all-reduces (weight set, then architecture set) over `iters`
// barrier-aligned iterations, after a few untimed ones that open the connections' buffers.
absl::Status TimeAllReduce(const JobPlan& plan, Collective& collective, int iters, RankResult* out) {
  torch::NoGradGuard no_grad;
  Supernet net(plan.graph, QuantOptionsFor(plan.spec));
  auto weight_set = SyncSet(net, net->WeightParameters());
  auto arch_set = SyncSet(net, net->ArchitectureParameters());
  out->allreduce_tensors = int(weight_set.size() + arch_set.size());
  out->allreduce_bytes = 0;
  for (const auto* set : {&weight_set, &arch_set}) {
    for (const auto& t : *set) out->allreduce_bytes += t.numel() * int64_t(t.element_size());
  }
  std::vector<double> ms;
  for (int i = -3; i < iters; ++i) {
    if (absl::Status st = collective.Barrier(); !st.ok()) return st;
    const auto t0 = Clock::now();
    if (absl::Status st = collective.AllReduceMean(weight_set); !st.ok()) return st;
    if (absl::Status st = collective.AllReduceMean(arch_set); !st.ok()) return st;
    if (i >= 0) ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  out->allreduce_ms = Median(ms);
  return absl::OkStatus();
}

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// One rank's whole life, in a process of its own. Rank 0 of several announces its store port on
// stdout; the other ranks get it as `store_port`.
RankResult RunRank(const BenchOptions& o, int world, int rank, int round, int store_port) {
  RankResult result;
  auto fail = [&](const absl::Status& st) {
    result.ok = false;
    result.error = absl::StrCat("rank ", rank, " of ", world, ": ", st.ToString());
    return result;
  };
  TuneAllocatorForTraining();
  auto plan = MakePlan(o, world);
  if (!plan.ok()) return fail(plan.status());
  // Before the data is built, so the two ranks do not oversubscribe the cores while loading.
  ConfigureTorchForTraining(plan->spec);
  auto data = LoadDataset(plan->spec.dataset(), plan->spec.seed());
  if (!data.ok()) return fail(data.status());

  std::unique_ptr<Collective> collective;
  if (world > 1) {
    CollectiveOptions co;
    co.rank = rank;
    co.world_size = world;
    co.timeout = absl::Seconds(120);
    co.prefix = absl::StrCat("scaling/round-", round, "/");
    absl::StatusOr<std::unique_ptr<Collective>> created;
    if (rank == 0) {
      auto host = RendezvousHost::Listen(co);
      if (!host.ok()) return fail(host.status());
      std::printf("%s%d\n", kPortLinePrefix, (*host)->port());
      std::fflush(stdout);
      created = CreateGlooCollective(co, std::move(*host));
    } else {
      co.store_port = store_port;
      created = CreateGlooCollective(co);
    }
    if (!created.ok()) return fail(created.status());
    collective = std::move(*created);
  }

  // Search-phase progress events: the step, the elapsed seconds since the job started, and this
  // process's CPU seconds at that moment.
  struct Mark {
    int64_t step;
    double elapsed, cpu;
  };
  std::vector<Mark> marks;
  RunOptions run;
  run.collective = collective.get();
  run.report_every = kWarmupSteps;
  run.progress = [&marks](const ProgressEvent& ev) {
    if (ev.phase == "search") marks.push_back({ev.step, ev.elapsed_seconds, ProcessCpuSeconds()});
  };
  auto model = RunJob(*plan, *data, run);
  if (!model.ok()) {
    if (collective) collective->Abort();  // do not leave the peer waiting out the timeout
    return fail(model.status());
  }
  // The first mark is the end of the warm-up steps; the last is the end of the epoch.
  if (marks.size() < 2 || marks.front().step != kWarmupSteps) {
    return fail(absl::InternalError(absl::StrCat("expected search progress every ", kWarmupSteps,
                                                 " steps, got ", marks.size(), " events")));
  }
  result.timed_steps = marks.back().step - marks.front().step;
  result.timed_seconds = marks.back().elapsed - marks.front().elapsed;
  result.timed_cpu_seconds = marks.back().cpu - marks.front().cpu;
  result.timed_images = result.timed_steps * 2 * int64_t(o.batch);  // a weight and an arch batch

  if (collective) {
    if (absl::Status st = TimeAllReduce(*plan, *collective, o.allreduce_iters, &result); !st.ok()) {
      collective->Abort();
      return fail(st);
    }
  }
  result.ok = true;
  return result;
}

// The text after `prefix` on the first line of `text` that starts with it, if a whole such line is there.
std::optional<std::string> LineAfter(const std::string& text, const std::string& prefix) {
  for (size_t start = 0; start < text.size();) {
    const size_t end = text.find('\n', start);
    if (end == std::string::npos) return std::nullopt;
    if (text.compare(start, prefix.size(), prefix) == 0) {
      return text.substr(start + prefix.size(), end - start - prefix.size());
    }
    start = end + 1;
  }
  return std::nullopt;
}

// Runs `world` ranks as processes of this binary (`argv`: the user's flags), waits for all of
// them, and returns their results in rank order.
std::vector<RankResult> RunRanks(const std::vector<std::string>& argv, int world, int round) {
  std::vector<RankResult> results(world);
  auto failed = [&](int rank, const std::string& why) {
    results[rank].ok = false;
    results[rank].error = absl::StrCat("rank ", rank, " of ", world, ": ", why);
  };
  SubprocessOptions options;
  options.stdout_to = SubprocessOptions::Output::kCapture;  // stderr: the bench's own
  auto start = [&](int rank, int store_port) -> std::unique_ptr<Subprocess> {
    std::vector<std::string> rank_argv = argv;
    rank_argv[0] = "/proc/self/exe";
    for (const std::string& flag :
         {absl::StrCat("--rank=", rank), absl::StrCat("--world=", world), absl::StrCat("--round=", round),
          absl::StrCat("--store-port=", store_port)}) {
      rank_argv.push_back(flag);
    }
    absl::StatusOr<std::unique_ptr<Subprocess>> child = Subprocess::Start(rank_argv, options);
    if (!child.ok()) {
      failed(rank, child.status().ToString());
      return nullptr;
    }
    return std::move(*child);
  };
  std::vector<std::unique_ptr<Subprocess>> ranks(world);
  ranks[0] = start(0, 0);
  if (ranks[0] != nullptr && world > 1) {
    // The others need rank 0's store port: wait until it says it, or ends without saying it.
    std::optional<std::string> port;
    while (!(port = LineAfter(ranks[0]->stdout_text(), kPortLinePrefix)).has_value() &&
           !ranks[0]->Wait(absl::Milliseconds(20)).ok()) {
    }
    port = LineAfter(ranks[0]->stdout_text(), kPortLinePrefix);  // it may have said it as it ended
    int store_port = 0;
    if (!port.has_value() || !absl::SimpleAtoi(*port, &store_port)) {
      for (int rank = 1; rank < world; ++rank) failed(rank, "rank 0 ended before publishing its store port");
    } else {
      for (int rank = 1; rank < world; ++rank) ranks[rank] = start(rank, store_port);
    }
  }
  for (int rank = 0; rank < world; ++rank) {
    if (ranks[rank] == nullptr) continue;
    const int code = ranks[rank]->Wait().value_or(-1);
    const std::optional<std::string> line = LineAfter(ranks[rank]->stdout_text(), kResultLinePrefix);
    RankResult r = Deserialize(line.has_value() ? *line + "\n" : "");
    if (r.ok && code != 0) {
      r.ok = false;
      r.error = absl::StrCat("rank ", rank, " exited abnormally (exit code ", code, ")");
    }
    results[rank] = r;
  }
  return results;
}

// Images/s of all ranks together; each rank's rate is its own images over its own timed window.
double TotalImagesPerSecond(const std::vector<RankResult>& ranks) {
  double total = 0;
  for (const auto& r : ranks) total += double(r.timed_images) / r.timed_seconds;
  return total;
}

double StepMs(const std::vector<RankResult>& ranks) {
  std::vector<double> ms;
  for (const auto& r : ranks) ms.push_back(1000.0 * r.timed_seconds / double(r.timed_steps));
  return *std::max_element(ms.begin(), ms.end());
}

// Cores' worth of CPU each rank got in its timed window, averaged over the ranks.
double CpuShare(const std::vector<RankResult>& ranks) {
  double sum = 0;
  for (const auto& r : ranks) sum += r.timed_cpu_seconds / r.timed_seconds;
  return sum / double(ranks.size());
}

std::string LoadAverage() {
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) != 3) return "unknown";
  char text[64];
  std::snprintf(text, sizeof(text), "%.2f %.2f %.2f", load[0], load[1], load[2]);
  return text;
}

bool ParseFlags(int argc, char** argv, BenchOptions* o, RankFlags* rank) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    // The parent's flags for a rank (--name=value).
    int* rank_field = nullptr;
    for (auto [name, field] :
         {std::make_pair("--rank=", &rank->rank), std::make_pair("--world=", &rank->world),
          std::make_pair("--round=", &rank->round), std::make_pair("--store-port=", &rank->store_port)}) {
      if (flag.rfind(name, 0) == 0) {
        rank_field = field;
        *field = std::atoi(flag.c_str() + std::strlen(name));
      }
    }
    if (rank_field != nullptr) continue;
    if (i + 1 >= argc) {
      std::fprintf(stderr, "unknown flag or missing value: %s\n", flag.c_str());
      return false;
    }
    const char* value = argv[++i];
    if (flag == "--width")
      o->width = std::atof(value);
    else if (flag == "--batch")
      o->batch = std::atoi(value);
    else if (flag == "--steps")
      o->steps = std::atoi(value);
    else if (flag == "--rounds")
      o->rounds = std::atoi(value);
    else if (flag == "--threads")
      o->threads = std::atoi(value);
    else if (flag == "--data")
      o->data = value;
    else if (flag == "--allreduce-iters")
      o->allreduce_iters = std::atoi(value);
    else {
      std::fprintf(stderr, "unknown flag: %s\n", flag.c_str());
      return false;
    }
  }
  // At least as many timed steps as warm-up steps. The architecture shard (a quarter of the weight
  // shard) then holds at least one full batch, so every step's two batches are full.
  if (o->steps < 2 * kWarmupSteps) {
    std::fprintf(stderr, "--steps must be >= %d\n", 2 * kWarmupSteps);
    return false;
  }
  if (o->batch < 1 || o->rounds < 1 || o->threads < 1 || o->allreduce_iters < 1 || !(o->width > 0)) {
    std::fprintf(stderr, "--batch, --rounds, --threads, --allreduce-iters and --width must be positive\n");
    return false;
  }
  if (o->data == "fashion-mnist" &&
      !std::ifstream(std::string(kDefaultFashionMnistDir) + "/train-images-idx3-ubyte.gz").good()) {
    std::fprintf(stderr, "--data fashion-mnist: the data set is not installed in %s\n",
                 kDefaultFashionMnistDir);
    return false;
  }
  return true;
}

int Main(int argc, char** argv) {
  BenchOptions o;
  RankFlags rank_flags;
  if (!ParseFlags(argc, argv, &o, &rank_flags)) return 2;
  if (rank_flags.rank >= 0) {
    const RankResult r =
        RunRank(o, rank_flags.world, rank_flags.rank, rank_flags.round, rank_flags.store_port);
    std::printf("%s%s", kResultLinePrefix, Serialize(r).c_str());
    std::fflush(nullptr);
    // Skip static destructors: LibTorch's and Gloo's background threads are not worth a clean
    // teardown in a benchmark rank, and the result line says whether it got through.
    _exit(0);
  }
  const std::vector<std::string> user_argv(argv, argv + argc);
  std::printf(
      "bpnas-scaling: resnet20 width %.2f, %s 28x28x1, batch %d per rank, %d thread(s) per rank,\n"
      "  %d search steps per run (first %d untimed), %d round(s), ranks are processes\n",
      o.width, o.data.c_str(), o.batch, o.threads, o.steps, kWarmupSteps, o.rounds);
  std::printf("load average before: %s\n\n", LoadAverage().c_str());
  std::printf("%-6s %-6s %10s %16s %18s\n", "round", "ranks", "step ms", "images/s (all)",
              "CPU/rank (cores)");

  std::vector<double> ratios, step1, step2, ips1, ips2, cpu1, cpu2, allreduce_ms;
  int allreduce_tensors = 0;
  int64_t allreduce_bytes = 0;
  for (int round = 0; round < o.rounds; ++round) {
    // Alternate the order so a trend in the machine's speed does not favour one configuration.
    const std::vector<int> worlds = round % 2 == 0 ? std::vector<int>{1, 2} : std::vector<int>{2, 1};
    double ips[3] = {0, 0, 0};
    for (int world : worlds) {
      auto ranks = RunRanks(user_argv, world, round);
      for (const auto& r : ranks) {
        if (!r.ok) {
          std::fprintf(stderr, "round %d, %d rank(s) failed: %s\n", round, world, r.error.c_str());
          return 1;
        }
      }
      ips[world] = TotalImagesPerSecond(ranks);
      const double step_ms = StepMs(ranks);
      (world == 1 ? step1 : step2).push_back(step_ms);
      (world == 1 ? ips1 : ips2).push_back(ips[world]);
      (world == 1 ? cpu1 : cpu2).push_back(CpuShare(ranks));
      if (world == 2) {
        allreduce_ms.push_back(ranks[0].allreduce_ms);
        allreduce_tensors = ranks[0].allreduce_tensors;
        allreduce_bytes = ranks[0].allreduce_bytes;
      }
      std::printf("%-6d %-6d %10.1f %16.1f %18.2f\n", round, world, step_ms, ips[world], CpuShare(ranks));
      std::fflush(stdout);
    }
    ratios.push_back(ips[2] / ips[1]);
  }

  const double speedup = Median(ratios);
  const double s1 = Median(step1), s2 = Median(step2), ar = Median(allreduce_ms);
  std::printf("\nmedians over rounds:\n");
  std::printf("  1 rank :  step %8.1f ms  %9.1f images/s\n", s1, Median(ips1));
  std::printf("  2 ranks:  step %8.1f ms  %9.1f images/s (both ranks)\n", s2, Median(ips2));
  std::printf("  speed-up 2 ranks / 1 rank (median of per-round ratios): %.2fx  (ideal 2.00x)\n", speedup);
  std::printf(
      "  all-reduce per step, isolated (weight set + architecture set, %d tensors, %.2f MB):\n"
      "    %.2f ms median of %d iterations x %zu round(s) = %.1f%% of a 2-rank step\n",
      allreduce_tensors, double(allreduce_bytes) / 1e6, ar, o.allreduce_iters, allreduce_ms.size(),
      s2 > 0 ? 100.0 * ar / s2 : 0.0);
  // What is left of a 2-rank step without its all-reduce, relative to a 1-rank step. Above 1.0 is
  // compute that got slower with two ranks: the ranks sharing caches and memory bandwidth, one
  // rank waiting for the other, or (CPU/rank below the thread count) other work taking the cores.
  std::printf("  2-rank step without the all-reduce / 1-rank step: %.2f\n", s1 > 0 ? (s2 - ar) / s1 : 0.0);
  // The speed-up is only a property of the engine when every rank had its cores to itself.
  const double c1 = Median(cpu1), c2 = Median(cpu2);
  if (std::min(c1, c2) < 0.9 * o.threads) {
    std::printf(
        "  NOTE: ranks got %.2f (1 rank) and %.2f (2 ranks) cores of %d thread(s) each: other work\n"
        "    or waiting took the rest, so this speed-up measures the machine's spare CPU as much as\n"
        "    the engine\n",
        c1, c2, o.threads);
  }
  std::printf("load average after: %s\n", LoadAverage().c_str());
  std::printf("TARGET %s (>= 1.8x)\n", speedup >= 1.8 ? "MET" : "MISSED");
  return 0;
}

}  // namespace
}  // namespace bpnas

int main(int argc, char** argv) { return bpnas::Main(argc, argv); }
