// Data-parallel search: two ranks (threads of this process) running the engine over Gloo on loopback
// must end with the same model, and it must keep the budget.
#include <fstream>
#include <future>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "spec/spec.h"
#include "worker/collective.h"
#include "worker/engine/artifact.h"
#include "worker/engine/data.h"
#include "worker/engine/search.h"

namespace bpnas {
namespace {

bool HaveFashionMnist() {
  return std::ifstream(std::string(kDefaultFashionMnistDir) + "/train-images-idx3-ubyte.gz").good();
}

JobPlan Plan(int ranks) {
  bpnas::v1::JobSpec spec;
  auto st = google::protobuf::util::JsonStringToMessage(R"({"model": {"name": "tiny"},
    "dataset": {"kind": "fashion-mnist", "train_limit": 6000, "test_limit": 1000},
    "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 3},
    "search": {"warmup_epochs": 1, "epochs": 1, "batch_size": 64}, "finetune": {"epochs": 1},
    "threads": 1, "seed": 5})",
                                                        &spec);
  EXPECT_TRUE(st.ok());
  spec.set_ranks(uint32_t(ranks));
  auto plan = PlanJob(spec);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return *plan;
}

// Runs the plan on `world` ranks; returns each rank's result (model or error).
std::vector<absl::StatusOr<bpnas::v1::QuantizedModel>> RunRanks(
    const JobPlan& plan, int world, std::vector<std::atomic<bool>>* stop = nullptr) {
  auto data = LoadDataset(plan.spec.dataset(), plan.spec.seed());
  EXPECT_TRUE(data.ok()) << data.status();
  CollectiveOptions base;
  base.world_size = world;
  base.timeout = absl::Seconds(30);
  base.prefix = absl::StrCat(::testing::UnitTest::GetInstance()->current_test_info()->name(), "/");
  auto host = RendezvousHost::Listen(base);
  EXPECT_TRUE(host.ok()) << host.status();
  const int port = (*host)->port();
  std::unique_ptr<RendezvousHost> host0 = std::move(*host);
  std::vector<absl::StatusOr<bpnas::v1::QuantizedModel>> results(world, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      CollectiveOptions o = base;
      o.rank = r;
      o.store_port = port;
      auto collective = CreateGlooCollective(o, r == 0 ? std::move(host0) : nullptr);
      if (!collective.ok()) {
        results[r] = collective.status();
        return;
      }
      RunOptions options;
      options.collective = collective->get();
      if (stop != nullptr) options.should_stop = [stop, r] { return (*stop)[r].load(); };
      results[r] = RunJob(plan, *data, options);
      if (!results[r].ok()) (*collective)->Abort();  // do not leave the peer waiting
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

TEST(DataParallel, TwoRanksEndWithTheSameModelWithinBudget) {
  if (!HaveFashionMnist()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  JobPlan plan = Plan(2);
  auto results = RunRanks(plan, 2);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  ASSERT_TRUE(results[1].ok()) << results[1].status();
  // Same parameters, buffers and result on both ranks: the artifacts are byte-identical but for
  // the wall-clock phase times (and so the checksum).
  auto comparable = [](bpnas::v1::QuantizedModel m) {
    m.mutable_result()->clear_phase_times();
    m.clear_checksum();
    return SerializeModel(m);
  };
  EXPECT_TRUE(comparable(*results[0]) == comparable(*results[1])) << "the ranks' models differ";
  EXPECT_EQ(results[0]->result().test_accuracy(), results[1]->result().test_accuracy());
  EXPECT_TRUE(results[0]->result().within_budget());
  EXPECT_LE(results[0]->result().cost(), results[0]->result().budget());
  // Accuracy is over the whole test split (each rank evaluates its half; counts are summed), and the
  // artifact reproduces it.
  auto data = LoadDataset(plan.spec.dataset(), plan.spec.seed());
  ASSERT_TRUE(data.ok());
  auto acc = EvaluateQuantizedModel(*results[0], data->test);
  ASSERT_TRUE(acc.ok());
  EXPECT_NEAR(*acc, results[0]->result().test_accuracy(), 0.21);  // rounding of folded batch norm
  EXPECT_GT(results[0]->result().test_accuracy(), 30.0) << "it learned something (chance: 10%)";
}

TEST(DataParallel, AStoppedRankEndsItsPeerInsteadOfHangingIt) {
  if (!HaveFashionMnist()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  JobPlan plan = Plan(2);
  std::vector<std::atomic<bool>> stop(2);
  stop[0] = false;
  stop[1] = true;  // rank 1 stops at its first step
  const auto t0 = std::chrono::steady_clock::now();
  auto results = RunRanks(plan, 2, &stop);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(results[1].status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(results[0].ok()) << "rank 0 cannot finish without its peer";
  EXPECT_LT(s, 40) << "bounded by the collective timeout (30 s), not forever";
}

}  // namespace
}  // namespace bpnas

namespace bpnas {
namespace {

// A checkpoint holds the whole training state: a run resumed from one ends with exactly the model
// of the run that never stopped (the same bits), from any phase.
TEST(Checkpoint, ARunResumedFromAnyCheckpointEndsWithTheSameModel) {
  bpnas::v1::JobSpec spec;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(R"({"model": {"name": "tiny"},
    "dataset": {"kind": "synthetic", "synthetic_train": 900, "synthetic_test": 200},
    "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 3},
    "search": {"warmup_epochs": 1, "epochs": 2, "batch_size": 64}, "finetune": {"epochs": 1},
    "threads": 1, "seed": 9, "checkpoint_every_steps": 5, "checkpoint_every_seconds": 0})",
                                                          &spec)
                  .ok());
  auto plan = PlanJob(spec);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto data = LoadDataset(plan->spec.dataset(), plan->spec.seed());
  ASSERT_TRUE(data.ok());

  struct Saved {
    std::string phase, state;
    int64_t step;
  };
  std::vector<Saved> saved;
  std::vector<int64_t> reported_steps;
  RunOptions options;
  options.report_every = 1;
  options.checkpoint = [&](const std::string& phase, const std::string& state, int64_t step) {
    saved.push_back({phase, state, step});
  };
  options.progress = [&](const ProgressEvent& ev) { reported_steps.push_back(ev.job_step); };
  auto full = RunJob(*plan, *data, options);
  ASSERT_TRUE(full.ok()) << full.status();
  for (size_t i = 1; i < reported_steps.size(); ++i) ASSERT_LT(reported_steps[i - 1], reported_steps[i]);
  std::set<std::string> phases;
  for (const auto& s : saved) phases.insert(s.phase);
  ASSERT_EQ(phases, (std::set<std::string>{"warmup", "search", "finetune"})) << "checkpoints in every phase";

  auto comparable = [](bpnas::v1::QuantizedModel m) {
    m.mutable_result()->clear_phase_times();
    m.clear_checksum();
    return SerializeModel(m);
  };
  const std::string want = comparable(*full);
  for (const std::string phase : {"warmup", "search", "finetune"}) {
    const Saved* pick = nullptr;
    for (const auto& s : saved) {
      if (s.phase == phase) pick = &s;  // the last one of the phase
    }
    RunOptions resume;
    resume.resume_from = pick->state;
    std::vector<int64_t> steps;
    resume.report_every = 1;
    resume.progress = [&](const ProgressEvent& ev) { steps.push_back(ev.job_step); };
    auto resumed = RunJob(*plan, *data, resume);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    EXPECT_TRUE(comparable(*resumed) == want) << "resumed from " << phase << " at step " << pick->step;
    ASSERT_FALSE(steps.empty());
    EXPECT_EQ(steps.front(), pick->step + 1) << "the resumed run continues the step count";
  }

  RunOptions bad;
  bad.resume_from = "not a checkpoint";
  EXPECT_EQ(RunJob(*plan, *data, bad).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace bpnas
