// The Gloo collective with 2 and 3 ranks as threads of one process, each rank with its own
// Collective and rank 0's store on a free loopback port: exact results, broadcast from a non-zero
// root, barrier, bounded failure when a rank is missing or stuck, Abort(), and the one-rank no-op.
#include "worker/collective.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace bpnas {
namespace {

using Group = std::vector<std::unique_ptr<Collective>>;

CollectiveOptions Options(int rank, int world_size, absl::Duration timeout) {
  CollectiveOptions o;
  o.rank = rank;
  o.world_size = world_size;
  o.timeout = timeout;
  o.prefix = absl::StrCat(::testing::UnitTest::GetInstance()->current_test_info()->name(), "/");
  return o;
}

// Creates ranks `present` of a world of `world_size`, concurrently (the rendezvous blocks until
// all have joined). Rank 0 listens on a free port first and hands the port to the others.
std::vector<absl::StatusOr<std::unique_ptr<Collective>>> CreateRanks(int world_size,
                                                                     const std::vector<int>& present,
                                                                     absl::Duration timeout) {
  std::promise<int> port_promise;
  std::shared_future<int> port = port_promise.get_future().share();
  const bool has_rank0 = std::find(present.begin(), present.end(), 0) != present.end();
  std::unique_ptr<RendezvousHost> host;
  if (has_rank0) {
    auto listening = RendezvousHost::Listen(Options(0, world_size, timeout));
    EXPECT_TRUE(listening.ok()) << listening.status();
    host = std::move(listening).value();
    port_promise.set_value(host->port());
  } else {
    port_promise.set_value(1);  // nobody listens there: the store never answers
  }
  std::vector<absl::StatusOr<std::unique_ptr<Collective>>> results;
  for (size_t i = 0; i < present.size(); ++i) results.emplace_back(absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < present.size(); ++i) {
    threads.emplace_back([&, i] {
      CollectiveOptions o = Options(present[i], world_size, timeout);
      o.store_port = port.get();
      results[i] = CreateGlooCollective(o, present[i] == 0 ? std::move(host) : nullptr);
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

Group MakeGroup(int world_size, absl::Duration timeout = absl::Seconds(10)) {
  std::vector<int> ranks;
  for (int r = 0; r < world_size; ++r) ranks.push_back(r);
  auto results = CreateRanks(world_size, ranks, timeout);
  Group group;
  for (auto& result : results) {
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return {};
    group.push_back(std::move(result).value());
  }
  return group;
}

// Runs fn(rank) on every rank concurrently and waits for all.
void ForEachRank(int world_size, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

// Tensors of several shapes and dtypes, rank-dependent: base_i * (rank + 1). One is a
// non-contiguous view and one a parameter that requires grad.
std::vector<torch::Tensor> RankTensors(int rank) {
  const double scale = rank + 1;
  std::vector<torch::Tensor> tensors = {
      torch::arange(12, torch::kFloat).reshape({3, 4}) * scale,
      torch::arange(5, torch::kDouble) * scale + 0.25,
      torch::full({}, 7.0, torch::kFloat) * scale,                     // 0-dim
      (torch::arange(20, torch::kFloat).reshape({4, 5}) * scale).t(),  // non-contiguous
      (torch::ones({2, 3, 2}, torch::kDouble) * scale).set_requires_grad(true),
  };
  return tensors;
}

void ExpectAllReduceExact(int world_size) {
  Group group = MakeGroup(world_size);
  ASSERT_EQ(group.size(), static_cast<size_t>(world_size));
  std::vector<std::vector<torch::Tensor>> sums(world_size), means(world_size);
  ForEachRank(world_size, [&](int r) {
    sums[r] = RankTensors(r);
    means[r] = RankTensors(r);
    EXPECT_TRUE(group[r]->AllReduceSum(sums[r]).ok());
    EXPECT_TRUE(group[r]->AllReduceMean(means[r]).ok());
  });
  // Expected values computed like the implementation: the elementwise sum over ranks, then / W.
  std::vector<torch::Tensor> expected_sum = RankTensors(0);
  for (auto& t : expected_sum) t = t.detach().clone();
  for (int r = 1; r < world_size; ++r) {
    std::vector<torch::Tensor> other = RankTensors(r);
    for (size_t i = 0; i < other.size(); ++i) expected_sum[i] += other[i].detach();
  }
  for (int r = 0; r < world_size; ++r) {
    for (size_t i = 0; i < expected_sum.size(); ++i) {
      EXPECT_TRUE(torch::equal(sums[r][i], expected_sum[i])) << "rank " << r << " tensor " << i;
      EXPECT_TRUE(torch::equal(means[r][i], expected_sum[i] / world_size)) << "rank " << r << " tensor " << i;
      EXPECT_EQ(sums[r][i].sizes(), expected_sum[i].sizes());
    }
    EXPECT_FALSE(sums[r][3].is_contiguous()) << "the caller's view was replaced, not written";
  }
}

TEST(GlooCollective, AllReduceSumAndMeanAreExactWithTwoRanks) { ExpectAllReduceExact(2); }

TEST(GlooCollective, AllReduceSumAndMeanAreExactWithThreeRanks) { ExpectAllReduceExact(3); }

TEST(GlooCollective, BroadcastCopiesTheRootsTensorsToEveryRank) {
  constexpr int kWorld = 3;
  Group group = MakeGroup(kWorld);
  ASSERT_EQ(group.size(), static_cast<size_t>(kWorld));
  std::vector<std::vector<torch::Tensor>> tensors(kWorld);
  ForEachRank(kWorld, [&](int r) {
    tensors[r] = {torch::full({2, 3}, r + 0.5, torch::kFloat), torch::full({4}, r * 10, torch::kLong),
                  torch::full({1}, r - 1.5, torch::kDouble)};
    EXPECT_TRUE(group[r]->Broadcast(tensors[r], /*root=*/1).ok());
  });
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_TRUE(torch::equal(tensors[r][0], torch::full({2, 3}, 1.5, torch::kFloat)));
    EXPECT_TRUE(torch::equal(tensors[r][1], torch::full({4}, 10, torch::kLong)));
    EXPECT_TRUE(torch::equal(tensors[r][2], torch::full({1}, -0.5, torch::kDouble)));
  }
}

TEST(GlooCollective, BarrierWaitsForTheLastRank) {
  constexpr int kWorld = 2;
  Group group = MakeGroup(kWorld);
  ASSERT_EQ(group.size(), static_cast<size_t>(kWorld));
  std::vector<absl::Duration> waited(kWorld);
  ForEachRank(kWorld, [&](int r) {
    if (r == 1) absl::SleepFor(absl::Milliseconds(300));
    const absl::Time start = absl::Now();
    EXPECT_TRUE(group[r]->Barrier().ok());
    waited[r] = absl::Now() - start;
  });
  EXPECT_GE(waited[0], absl::Milliseconds(250));
}

TEST(GlooCollective, MissingRankFailsTheRendezvousWithinTheTimeout) {
  const absl::Duration timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  auto results = CreateRanks(/*world_size=*/3, /*present=*/{0, 1}, timeout);
  const absl::Duration took = absl::Now() - start;
  for (auto& result : results) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  }
  EXPECT_LT(took, timeout + absl::Milliseconds(1500));
}

TEST(GlooCollective, MissingRankZeroFailsTheOthersWithinTheTimeout) {
  const absl::Duration timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  auto results = CreateRanks(/*world_size=*/2, /*present=*/{1}, timeout);
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kDeadlineExceeded) << results[0].status();
  EXPECT_LT(took, timeout + absl::Milliseconds(1500));
}

TEST(GlooCollective, StuckRankMakesAllReduceFailWithinTheTimeoutAndLeavesTensorsUnchanged) {
  const absl::Duration timeout = absl::Seconds(2);
  Group group = MakeGroup(2, timeout);
  ASSERT_EQ(group.size(), 2u);
  // Rank 1 joined but never enters the all-reduce.
  std::vector<torch::Tensor> tensors = {torch::ones({8}), torch::ones({2, 2})};
  const absl::Time start = absl::Now();
  const absl::Status status = group[0]->AllReduceSum(tensors);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_NE(status.message().find("all-reduce timed out after 2 s"), std::string::npos) << status;
  EXPECT_GE(took, timeout - absl::Milliseconds(100));
  EXPECT_LT(took, timeout + absl::Milliseconds(1500));
  EXPECT_TRUE(torch::equal(tensors[0], torch::ones({8})));
  // The ranks may be out of step now: every later call is refused at once.
  EXPECT_EQ(group[0]->Barrier().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(GlooCollective, AbortReleasesABlockedCallAtOnceAndRefusesLaterCalls) {
  const absl::Duration timeout = absl::Seconds(10);
  Group group = MakeGroup(2, timeout);
  ASSERT_EQ(group.size(), 2u);
  std::vector<torch::Tensor> tensors = {torch::ones({1000})};
  absl::Time returned;
  absl::Status status;
  std::thread blocked([&] {
    status = group[0]->AllReduceMean(tensors);  // rank 1 never joins this one
    returned = absl::Now();
  });
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time aborted = absl::Now();
  group[0]->Abort();
  blocked.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_LT(returned - aborted, absl::Milliseconds(200));
  EXPECT_TRUE(torch::equal(tensors[0], torch::ones({1000})));
  EXPECT_EQ(group[0]->AllReduceSum(tensors).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(group[0]->Barrier().code(), absl::StatusCode::kAborted);
  // The peer leaving closes its connections, which fails Gloo's abandoned operation, so rank 0's
  // collective is destroyed without waiting for the 10 s timeout.
  const absl::Time teardown = absl::Now();
  group[1].reset();
  group[0].reset();
  EXPECT_LT(absl::Now() - teardown, absl::Seconds(3));
}

TEST(GlooCollective, PeerThatLeavesFailsTheOthersLongBeforeTheTimeout) {
  const absl::Duration timeout = absl::Seconds(10);
  Group group = MakeGroup(2, timeout);
  ASSERT_EQ(group.size(), 2u);
  group[1].reset();  // like a worker process that exited
  std::vector<torch::Tensor> tensors = {torch::ones({16})};
  const absl::Time start = absl::Now();
  const absl::Status status = group[0]->AllReduceSum(tensors);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST(GlooCollective, OneRankIsANoOp) {
  CollectiveOptions o;  // world_size 1, no store
  auto collective = CreateGlooCollective(o);
  ASSERT_TRUE(collective.ok()) << collective.status();
  std::vector<torch::Tensor> tensors = RankTensors(2);
  const std::vector<torch::Tensor> original = RankTensors(2);
  EXPECT_TRUE((*collective)->AllReduceMean(tensors).ok());
  EXPECT_TRUE((*collective)->AllReduceSum(tensors).ok());
  EXPECT_TRUE((*collective)->Broadcast(tensors, 0).ok());
  EXPECT_TRUE((*collective)->Barrier().ok());
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_TRUE(torch::equal(tensors[i], original[i]));
  (*collective)->Abort();
  EXPECT_EQ((*collective)->Barrier().code(), absl::StatusCode::kAborted);
}

TEST(GlooCollective, RejectsBadArguments) {
  CollectiveOptions o;
  {
    auto collective = CreateGlooCollective(o);
    ASSERT_TRUE(collective.ok());
    std::vector<torch::Tensor> ints = {torch::ones({3}, torch::kLong)};
    EXPECT_EQ((*collective)->AllReduceMean(ints).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    auto collective = CreateGlooCollective(o);
    ASSERT_TRUE(collective.ok());
    std::vector<torch::Tensor> undefined = {torch::Tensor()};
    EXPECT_EQ((*collective)->AllReduceSum(undefined).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    auto collective = CreateGlooCollective(o);
    ASSERT_TRUE(collective.ok());
    std::vector<torch::Tensor> tensors = {torch::ones({3})};
    EXPECT_EQ((*collective)->Broadcast(tensors, 1).code(), absl::StatusCode::kInvalidArgument);
  }
  o.world_size = 2;
  o.rank = 2;
  EXPECT_EQ(CreateGlooCollective(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.rank = 1;
  o.store_port = 0;
  EXPECT_EQ(CreateGlooCollective(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// Many small tensors cost about one collective of their total size: the call flattens them into
// one buffer. Also prints the all-reduce time of a 1.1 MB float buffer (a full-width resnet20's
// ~270k parameters) between two ranks on loopback.
TEST(GlooCollective, ManyTensorsCostAboutOneCollective) {
  Group group = MakeGroup(2);
  ASSERT_EQ(group.size(), 2u);
  constexpr int kTensors = 300;
  constexpr int64_t kTotal = 275000;
  constexpr int kIterations = 30;
  std::vector<absl::Duration> one_buffer(2), many_tensors(2);
  ForEachRank(2, [&](int r) {
    std::vector<torch::Tensor> one = {torch::rand({kTotal})};
    std::vector<torch::Tensor> many;
    for (int i = 0; i < kTensors; ++i) many.push_back(torch::rand({kTotal / kTensors}));
    EXPECT_TRUE(group[r]->AllReduceMean(one).ok());  // warm-up
    absl::Time start = absl::Now();
    for (int i = 0; i < kIterations; ++i) EXPECT_TRUE(group[r]->AllReduceMean(one).ok());
    one_buffer[r] = (absl::Now() - start) / kIterations;
    start = absl::Now();
    for (int i = 0; i < kIterations; ++i) EXPECT_TRUE(group[r]->AllReduceMean(many).ok());
    many_tensors[r] = (absl::Now() - start) / kIterations;
  });
  std::printf(
      "all-reduce of %lld floats (%.2f MB), 2 ranks on loopback: one tensor %.3f ms, "
      "%d tensors %.3f ms per call\n",
      static_cast<long long>(kTotal), kTotal * 4 / 1e6, absl::ToDoubleMilliseconds(one_buffer[0]), kTensors,
      absl::ToDoubleMilliseconds(many_tensors[0]));
  // One collective per tensor would cost hundreds of round trips; flattening costs two copies.
  EXPECT_LT(many_tensors[0], 3 * one_buffer[0] + absl::Milliseconds(5));
}

}  // namespace
}  // namespace bpnas
