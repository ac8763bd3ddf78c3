// JobWatcher (server/job_watcher.h) called directly, without gRPC, over a real PostgreSQL store
// (pg_test_env.h): the events a WatchJob stream carries and when it ends.
#include "server/job_watcher.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/time/time.h"
#include "server/pg/pg_job_store.h"
#include "tests/pg_test_env.h"

namespace bpnas {
namespace {

using bpnas::v1::HeartbeatResponse;
using bpnas::v1::WatchJobEvent;

constexpr absl::Duration kPoll = absl::Milliseconds(10);

// What a watch emitted, in order: "job:STATE" or "step:N".
std::string Describe(const WatchJobEvent& e) {
  if (e.has_job()) return "job:" + bpnas::v1::JobState_Name(e.job().state());
  return "step:" + std::to_string(e.progress().step());
}

class JobWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(PgTestEnv::Get().Reset().ok());
    auto store = PgJobStore::Open(PgTestEnv::Get().dsn(), 4);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    bpnas::v1::JobSpec spec;
    spec.set_name("watched");
    spec.mutable_model()->set_name("tiny");
    spec.set_ranks(1);
    auto created = store_->CreateJob("", spec, 1e6);
    ASSERT_TRUE(created.ok()) << created.status();
    job_id_ = created->first.id();
    bpnas::v1::RegisterRequest worker;
    worker.set_name("w");
    worker.set_device(bpnas::v1::CPU);
    auto worker_id = store_->RegisterWorker(worker, absl::Seconds(60));
    ASSERT_TRUE(worker_id.ok()) << worker_id.status();
    ASSERT_EQ(store_->StartNextAttempt().value_or(""), job_id_);
    auto beat = store_->Heartbeat(*worker_id, "", absl::Seconds(60));
    ASSERT_TRUE(beat.ok()) << beat.status();
    ASSERT_EQ(beat->action(), HeartbeatResponse::RUN);
    token_ = beat->assignment().attempt_token();
  }

  void Report(int64_t step) {
    ProgressReport report;
    report.attempt_token = token_;
    report.progress.set_step(step);
    report.progress.set_phase("search");
    auto stored = store_->AppendProgress({report});
    ASSERT_TRUE(stored.ok()) << stored.status();
    ASSERT_EQ(*stored, std::vector<bool>{true});
  }

  std::unique_ptr<PgJobStore> store_;
  std::string job_id_;
  std::string token_;
};

TEST_F(JobWatcherTest, EmitsTheJobThenEveryStepOnceThenTheEnd) {
  Report(1);
  Report(2);
  JobWatcher watcher(store_.get(), kPoll);
  std::vector<std::string> events;
  absl::Status watched;
  std::thread watching([&] {
    watched = watcher.Watch(
        job_id_, -1,
        [&](const WatchJobEvent& e) {
          events.push_back(Describe(e));
          return true;
        },
        [] { return false; });
  });
  absl::SleepFor(5 * kPoll);
  Report(3);
  Report(3);  // a repeat is stored once, so emitted once
  absl::SleepFor(5 * kPoll);
  ASSERT_TRUE(store_->CancelJob(job_id_, "enough").ok());
  watching.join();
  EXPECT_TRUE(watched.ok()) << watched;
  // The phase change to "search" was already there before the watch began.
  EXPECT_EQ(events, (std::vector<std::string>{"job:RUNNING", "step:1", "step:2", "step:3", "job:CANCELLED"}));
}

TEST_F(JobWatcherTest, AJobThatHasEndedGivesOnlyItselfAndReturnsAtOnce) {
  for (int64_t step = 1; step <= 4; ++step) Report(step);
  ASSERT_TRUE(store_->CancelJob(job_id_, "enough").ok());
  JobWatcher watcher(store_.get(), kPoll);
  std::vector<std::string> events;
  auto emit = [&](const WatchJobEvent& e) {
    events.push_back(Describe(e));
    return true;
  };
  ASSERT_TRUE(watcher.Watch(job_id_, 2, emit, [] { return false; }).ok());
  EXPECT_EQ(events, std::vector<std::string>{"job:CANCELLED"});
}

TEST_F(JobWatcherTest, AfterStepOfARunningJobStartsAfterThatStep) {
  for (int64_t step = 1; step <= 4; ++step) Report(step);
  JobWatcher watcher(store_.get(), kPoll);
  std::vector<std::string> events;
  // Stops (returns false) once it has seen a progress event: the watcher went away.
  absl::Status s = watcher.Watch(
      job_id_, 2,
      [&](const WatchJobEvent& e) {
        events.push_back(Describe(e));
        return !e.has_progress();
      },
      [] { return false; });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(events, (std::vector<std::string>{"job:RUNNING", "step:3"}));
}

TEST_F(JobWatcherTest, ACancelledWatchEndsCancelled) {
  JobWatcher watcher(store_.get(), kPoll);
  std::atomic<int> asked{0};
  absl::Status s = watcher.Watch(
      job_id_, -1, [](const WatchJobEvent&) { return true; }, [&] { return ++asked > 3; });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
}

TEST_F(JobWatcherTest, AnUnknownJobIsNotFoundAndEmitsNothing) {
  JobWatcher watcher(store_.get(), kPoll);
  int emitted = 0;
  absl::Status s = watcher.Watch(
      "j-nosuchjob0", -1,
      [&](const WatchJobEvent&) {
        ++emitted;
        return true;
      },
      [] { return false; });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(emitted, 0);
}

}  // namespace
}  // namespace bpnas
