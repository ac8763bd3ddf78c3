// Data-parallel search: two ranks (threads of this process) running the engine over Gloo on loopback
// must end with the same model, and it must keep the budget.
#include <gtest/gtest.h>

#include <fstream>
#include <future>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "worker/collective.h"
#include "worker/engine/artifact.h"
#include "worker/engine/data.h"
#include "worker/engine/search.h"
#include "worker/engine/spec.h"

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
    "threads": 1, "seed": 5})", &spec);
  EXPECT_TRUE(st.ok());
  spec.set_ranks(uint32_t(ranks));
  auto plan = PlanJob(spec);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return *plan;
}

// Runs the plan on `world` ranks; returns each rank's result (model or error).
std::vector<absl::StatusOr<bpnas::v1::QuantizedModel>> RunRanks(const JobPlan& plan, int world,
                                                               std::vector<std::atomic<bool>>* stop = nullptr) {
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
  EXPECT_GT(results[0]->result().test_accuracy(), 50.0) << "it learned something";
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
