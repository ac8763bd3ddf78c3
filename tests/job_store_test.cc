// Behaviour of PgJobStore and the migrations against a real PostgreSQL server (pg_test_env.h).
#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/sha256.h"
#include "server/pg/dsn.h"
#include "server/pg/migrations.h"
#include "server/pg/pg_job_store.h"
#include "tests/pg_test_env.h"

namespace bpnas {
namespace {

using bpnas::v1::HeartbeatResponse;
using bpnas::v1::Job;
using bpnas::v1::JobSpec;
using bpnas::v1::Progress;
using bpnas::v1::SearchResult;

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const ::absl::Status assert_ok_status_ = (expr);          \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(BPNAS_TEST_CONCAT_(statusor_, __LINE__), lhs, rexpr)
#define BPNAS_TEST_CONCAT_INNER_(a, b) a##b
#define BPNAS_TEST_CONCAT_(a, b) BPNAS_TEST_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                               \
  ASSERT_TRUE(tmp.ok()) << tmp.status();            \
  lhs = std::move(tmp).value()

constexpr absl::Duration kLease = absl::Seconds(60);

JobSpec MakeSpec(const std::string& name, uint32_t ranks = 1, bpnas::v1::DeviceKind device = bpnas::v1::CPU) {
  JobSpec spec;
  spec.set_name(name);
  spec.mutable_model()->set_name("tiny");
  spec.mutable_dataset()->set_kind("synthetic");
  spec.mutable_constraint()->set_metric(bpnas::v1::BITOPS);
  spec.mutable_constraint()->set_max_relative_to_uniform_bits(4);
  spec.mutable_search()->set_epochs(3);
  spec.set_ranks(ranks);
  spec.set_device(device);
  spec.set_seed(7);
  return spec;
}

bpnas::v1::RegisterRequest Worker(const std::string& name, bpnas::v1::DeviceKind device = bpnas::v1::CPU) {
  bpnas::v1::RegisterRequest request;
  request.set_name(name);
  request.set_device(device);
  request.set_threads(2);
  return request;
}

ProgressReport Report(const std::string& token, int64_t step, const std::string& phase, double loss) {
  ProgressReport report;
  report.attempt_token = token;
  report.progress.set_step(step);
  report.progress.set_phase(phase);
  report.progress.set_cross_entropy(loss);
  return report;
}

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(PgTestEnv::Get().Reset());
    ASSERT_OK_AND_ASSIGN(store_, PgJobStore::Open(PgTestEnv::Get().dsn(), 4));
  }

  // Registers a worker and returns its id.
  std::string Register(const std::string& name, bpnas::v1::DeviceKind device = bpnas::v1::CPU) {
    absl::StatusOr<std::string> id = store_->RegisterWorker(Worker(name, device), kLease);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or("");
  }

  // The worker's heartbeat response (fails the test on error).
  HeartbeatResponse Beat(const std::string& worker, const std::string& token = "",
                         absl::Duration lease = kLease) {
    absl::StatusOr<HeartbeatResponse> r = store_->Heartbeat(worker, token, lease);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.value_or(HeartbeatResponse());
  }

  // A 1-rank job started on a fresh worker: returns {job id, worker id, token}.
  struct Running {
    std::string job_id, worker_id, token;
  };
  Running StartOneRankJob(const std::string& name) {
    Running r;
    absl::StatusOr<std::pair<Job, bool>> created = store_->CreateJob("", MakeSpec(name), 1e6);
    EXPECT_TRUE(created.ok()) << created.status();
    r.worker_id = Register("w-" + name);
    absl::StatusOr<std::string> started = store_->StartNextAttempt();
    EXPECT_TRUE(started.ok()) << started.status();
    r.job_id = started.value_or("");
    EXPECT_EQ(r.job_id, created->first.id());
    HeartbeatResponse beat = Beat(r.worker_id);
    EXPECT_EQ(beat.action(), HeartbeatResponse::RUN);
    r.token = beat.assignment().attempt_token();
    return r;
  }

  std::map<std::string, int64_t> Workers() {
    absl::StatusOr<std::map<std::string, int64_t>> counts = store_->CountWorkersByState();
    EXPECT_TRUE(counts.ok()) << counts.status();
    return counts.value_or(std::map<std::string, int64_t>());
  }

  std::unique_ptr<PgJobStore> store_;
};

// ---- jobs ----

TEST_F(JobStoreTest, CreateThenGetRoundTripsTheSpec) {
  const JobSpec spec = MakeSpec("round-trip", 2, bpnas::v1::GPU);
  ASSERT_OK_AND_ASSIGN(auto created, store_->CreateJob("req-1", spec, 12345.5));
  EXPECT_TRUE(created.second);
  const Job& job = created.first;
  EXPECT_EQ(job.id().size(), 14u);
  EXPECT_EQ(job.id().rfind("j-", 0), 0u);
  EXPECT_EQ(job.state(), bpnas::v1::QUEUED);
  EXPECT_EQ(job.name(), "round-trip");
  EXPECT_EQ(job.request_id(), "req-1");
  EXPECT_EQ(job.attempts(), 0u);
  EXPECT_DOUBLE_EQ(job.budget(), 12345.5);
  EXPECT_GT(job.created_unix_ms(), absl::ToUnixMillis(absl::Now()) - 60000);
  EXPECT_FALSE(job.has_latest_progress());

  ASSERT_OK_AND_ASSIGN(Job got, store_->GetJob(job.id()));
  EXPECT_EQ(got.spec().SerializeAsString(), spec.SerializeAsString());
  EXPECT_EQ(got.id(), job.id());
  EXPECT_EQ(got.created_unix_ms(), job.created_unix_ms());

  EXPECT_EQ(store_->GetJob("j-000000000000").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetJob("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobStoreTest, SameRequestIdReturnsTheFirstJob) {
  ASSERT_OK_AND_ASSIGN(auto first, store_->CreateJob("same", MakeSpec("a"), 1));
  ASSERT_OK_AND_ASSIGN(auto second, store_->CreateJob("same", MakeSpec("b"), 2));
  EXPECT_TRUE(first.second);
  EXPECT_FALSE(second.second);
  EXPECT_EQ(second.first.id(), first.first.id());
  EXPECT_EQ(second.first.name(), "a");
  // An empty request id never matches: every call creates a job.
  ASSERT_OK_AND_ASSIGN(auto x, store_->CreateJob("", MakeSpec("x"), 1));
  ASSERT_OK_AND_ASSIGN(auto y, store_->CreateJob("", MakeSpec("x"), 1));
  EXPECT_TRUE(x.second);
  EXPECT_TRUE(y.second);
  EXPECT_NE(x.first.id(), y.first.id());
  ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs(bpnas::v1::JOB_STATE_UNSPECIFIED, 100));
  EXPECT_EQ(jobs.size(), 3u);
}

TEST_F(JobStoreTest, ConcurrentSameRequestIdMakesOneJob) {
  constexpr int kThreads = 8;
  std::vector<std::string> ids(kThreads);
  std::vector<int> created(kThreads, -1);
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      absl::StatusOr<std::pair<Job, bool>> r = store_->CreateJob("concurrent", MakeSpec("c"), 1);
      if (r.ok()) {
        ids[i] = r->first.id();
        created[i] = r->second ? 1 : 0;
      }
    });
  }
  go = true;
  for (std::thread& t : threads) t.join();
  int creators = 0;
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_NE(created[i], -1) << "call " << i << " failed";
    EXPECT_EQ(ids[i], ids[0]);
    creators += created[i];
  }
  EXPECT_EQ(creators, 1);
  ASSERT_OK_AND_ASSIGN(auto counts, store_->CountJobsByState());
  EXPECT_EQ(counts[bpnas::v1::QUEUED], 1);
}

TEST_F(JobStoreTest, ListJobsIsNewestFirstAndFiltersByState) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(auto c, store_->CreateJob("", MakeSpec(absl::StrCat("job", i)), 1));
    ids.push_back(c.first.id());
  }
  ASSERT_OK(store_->CancelJob(ids[1], "not needed").status());
  ASSERT_OK_AND_ASSIGN(auto all, store_->ListJobs(bpnas::v1::JOB_STATE_UNSPECIFIED, 10));
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].id(), ids[3]);
  EXPECT_EQ(all[3].id(), ids[0]);
  ASSERT_OK_AND_ASSIGN(auto limited, store_->ListJobs(bpnas::v1::JOB_STATE_UNSPECIFIED, 2));
  ASSERT_EQ(limited.size(), 2u);
  EXPECT_EQ(limited[1].id(), ids[2]);
  ASSERT_OK_AND_ASSIGN(auto queued, store_->ListJobs(bpnas::v1::QUEUED, 10));
  ASSERT_EQ(queued.size(), 3u);
  EXPECT_EQ(queued[0].id(), ids[3]);
  EXPECT_EQ(queued[1].id(), ids[2]);
  EXPECT_EQ(queued[2].id(), ids[0]);
  ASSERT_OK_AND_ASSIGN(auto cancelled, store_->ListJobs(bpnas::v1::CANCELLED, 10));
  ASSERT_EQ(cancelled.size(), 1u);
  EXPECT_EQ(cancelled[0].error(), "not needed");
  ASSERT_OK_AND_ASSIGN(auto counts, store_->CountJobsByState());
  EXPECT_EQ(counts[bpnas::v1::QUEUED], 3);
  EXPECT_EQ(counts[bpnas::v1::CANCELLED], 1);
  EXPECT_EQ(counts[bpnas::v1::RUNNING], 0);
  EXPECT_EQ(store_->ListJobs(bpnas::v1::QUEUED, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- scheduling ----

TEST_F(JobStoreTest, GangAssignmentWaitsForEnoughIdleWorkersOfItsKind) {
  ASSERT_OK_AND_ASSIGN(auto created, store_->CreateJob("", MakeSpec("gang", 2), 1));
  const std::string w0 = Register("cpu-0");
  Register("gpu-0", bpnas::v1::GPU);
  ASSERT_OK_AND_ASSIGN(std::string none, store_->StartNextAttempt());
  EXPECT_EQ(none, "") << "a 2-rank CPU job must wait with one CPU worker";
  EXPECT_EQ(Beat(w0).action(), HeartbeatResponse::IDLE);

  const std::string w1 = Register("cpu-1");
  ASSERT_OK_AND_ASSIGN(std::string started, store_->StartNextAttempt());
  EXPECT_EQ(started, created.first.id());
  ASSERT_OK_AND_ASSIGN(std::string again, store_->StartNextAttempt());
  EXPECT_EQ(again, "");

  HeartbeatResponse a0 = Beat(w0), a1 = Beat(w1);
  ASSERT_EQ(a0.action(), HeartbeatResponse::RUN);
  ASSERT_EQ(a1.action(), HeartbeatResponse::RUN);
  EXPECT_EQ(std::set<uint32_t>({a0.assignment().rank(), a1.assignment().rank()}), std::set<uint32_t>({0, 1}));
  for (const HeartbeatResponse* a : {&a0, &a1}) {
    EXPECT_EQ(a->assignment().job_id(), started);
    EXPECT_EQ(a->assignment().attempt(), 1u);
    EXPECT_EQ(a->assignment().world_size(), 2u);
    EXPECT_EQ(a->assignment().attempt_token().size(), 32u);
    EXPECT_EQ(a->assignment().spec().name(), "gang");
    EXPECT_FALSE(a->assignment().has_checkpoint());
  }
  EXPECT_NE(a0.assignment().attempt_token(), a1.assignment().attempt_token());
  // Carrying its token, a running worker keeps getting RUN.
  EXPECT_EQ(Beat(w0, a0.assignment().attempt_token()).action(), HeartbeatResponse::RUN);

  ASSERT_OK_AND_ASSIGN(Job job, store_->GetJob(started));
  EXPECT_EQ(job.state(), bpnas::v1::RUNNING);
  EXPECT_EQ(job.attempts(), 1u);
  EXPECT_GE(job.updated_unix_ms(), job.created_unix_ms());
  std::map<std::string, int64_t> workers = Workers();
  EXPECT_EQ(workers["BUSY"], 2);
  EXPECT_EQ(workers["IDLE"], 1);  // the GPU worker
  EXPECT_EQ(workers["LOST"], 0);
}

TEST_F(JobStoreTest, StartNextAttemptTakesTheOldestJobThatFits) {
  ASSERT_OK_AND_ASSIGN(auto big, store_->CreateJob("", MakeSpec("big", 2), 1));
  ASSERT_OK_AND_ASSIGN(auto gpu, store_->CreateJob("", MakeSpec("gpu", 1, bpnas::v1::GPU), 1));
  ASSERT_OK_AND_ASSIGN(auto small1, store_->CreateJob("", MakeSpec("small1", 1), 1));
  ASSERT_OK_AND_ASSIGN(auto small2, store_->CreateJob("", MakeSpec("small2", 1), 1));
  Register("cpu");
  ASSERT_OK_AND_ASSIGN(std::string started, store_->StartNextAttempt());
  EXPECT_EQ(started, small1.first.id());
  ASSERT_OK_AND_ASSIGN(std::string next, store_->StartNextAttempt());
  EXPECT_EQ(next, "");  // the only CPU worker is busy
  ASSERT_OK_AND_ASSIGN(Job still, store_->GetJob(big.first.id()));
  EXPECT_EQ(still.state(), bpnas::v1::QUEUED);
}

TEST_F(JobStoreTest, CancelOfARunningJobStopsItsWorkers) {
  Running r = StartOneRankJob("cancel-me");
  ASSERT_OK_AND_ASSIGN(Job cancelled, store_->CancelJob(r.job_id, "user asked"));
  EXPECT_EQ(cancelled.state(), bpnas::v1::CANCELLED);
  EXPECT_EQ(cancelled.error(), "user asked");
  EXPECT_EQ(Beat(r.worker_id, r.token).action(), HeartbeatResponse::STOP);
  EXPECT_EQ(Beat(r.worker_id).action(), HeartbeatResponse::IDLE);
  EXPECT_EQ(Workers()["IDLE"], 1);
  EXPECT_EQ(Workers()["BUSY"], 0);

  // Cancelling again changes nothing; a finished job cannot be cancelled; an unknown one is absent.
  ASSERT_OK_AND_ASSIGN(Job again, store_->CancelJob(r.job_id, "twice"));
  EXPECT_EQ(again.error(), "user asked");
  EXPECT_EQ(again.updated_unix_ms(), cancelled.updated_unix_ms());
  EXPECT_EQ(store_->CancelJob("j-ffffffffffff", "x").status().code(), absl::StatusCode::kNotFound);

  // The freed worker takes the next job.
  ASSERT_OK_AND_ASSIGN(auto next, store_->CreateJob("", MakeSpec("next"), 1));
  ASSERT_OK_AND_ASSIGN(std::string started, store_->StartNextAttempt());
  EXPECT_EQ(started, next.first.id());
}

TEST_F(JobStoreTest, CancelOfAFinishedJobIsFailedPrecondition) {
  Running r = StartOneRankJob("done");
  ASSERT_OK_AND_ASSIGN(auto state, store_->CompleteAttempt(r.token, false, "boom", SearchResult(), 0, 1));
  EXPECT_EQ(state, bpnas::v1::FAILED);
  absl::StatusOr<Job> cancel = store_->CancelJob(r.job_id, "too late");
  EXPECT_EQ(cancel.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(cancel.status().message().find("FAILED"), std::string::npos) << cancel.status();
}

// A coordinator start renews the leases of busy workers only: an idle worker that stopped
// heartbeating before the restart (one of an earlier `bpnas up`) must not get the next job, where it
// would sit until its lease ran out and cost the job an attempt.
TEST_F(JobStoreTest, CoordinatorStartRenewsBusyWorkersButDoesNotReviveSilentIdleOnes) {
  Running busy = StartOneRankJob("running");
  const std::string gone = Register("gone");
  Beat(busy.worker_id, busy.token, absl::Milliseconds(50));
  Beat(gone, "", absl::Milliseconds(50));
  absl::SleepFor(absl::Milliseconds(150));  // both leases have run out while "no coordinator ran"

  ASSERT_OK(store_->RenewBusyWorkerLeases(kLease));
  ASSERT_OK_AND_ASSIGN(int ended, store_->ExpireLeases(3));
  EXPECT_EQ(ended, 0) << "the running attempt keeps its worker";
  ASSERT_OK_AND_ASSIGN(Job running, store_->GetJob(busy.job_id));
  EXPECT_EQ(running.state(), bpnas::v1::RUNNING);
  EXPECT_EQ(running.attempts(), 1u);

  ASSERT_OK_AND_ASSIGN(auto next, store_->CreateJob("", MakeSpec("next"), 1));
  ASSERT_OK_AND_ASSIGN(std::string started, store_->StartNextAttempt());
  EXPECT_EQ(started, "") << "the silent idle worker must not be handed a job";
  EXPECT_EQ(Workers()["LOST"], 1);  // ExpireLeases above marked it

  // A live worker takes it at once.
  Register("alive");
  ASSERT_OK_AND_ASSIGN(started, store_->StartNextAttempt());
  EXPECT_EQ(started, next.first.id());
}

TEST_F(JobStoreTest, ExpiredLeasesRequeueTheJobThenFailItAfterMaxAttempts) {
  ASSERT_OK_AND_ASSIGN(auto created, store_->CreateJob("", MakeSpec("flaky", 2), 1));
  const std::string job_id = created.first.id();
  const std::string silent = Register("silent");
  const std::string healthy = Register("healthy");
  ASSERT_OK_AND_ASSIGN(std::string started, store_->StartNextAttempt());
  ASSERT_EQ(started, job_id);
  const std::string healthy_token = Beat(healthy).assignment().attempt_token();
  // Nothing has expired yet.
  ASSERT_OK_AND_ASSIGN(int ended, store_->ExpireLeases(2));
  EXPECT_EQ(ended, 0);

  // One rank goes silent: its lease shrinks to 50 ms and runs out.
  Beat(silent, "", absl::Milliseconds(50));
  absl::SleepFor(absl::Milliseconds(150));
  ASSERT_OK_AND_ASSIGN(ended, store_->ExpireLeases(2));
  EXPECT_EQ(ended, 1);
  ASSERT_OK_AND_ASSIGN(Job job, store_->GetJob(job_id));
  EXPECT_EQ(job.state(), bpnas::v1::QUEUED);
  EXPECT_NE(job.error().find(silent), std::string::npos) << job.error();
  EXPECT_EQ(job.attempts(), 1u);
  // The lost worker must register again; the healthy one is told to stop and is idle again.
  EXPECT_EQ(store_->Heartbeat(silent, "", kLease).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Beat(healthy, healthy_token).action(), HeartbeatResponse::STOP);
  std::map<std::string, int64_t> workers = Workers();
  EXPECT_EQ(workers["LOST"], 1);
  EXPECT_EQ(workers["IDLE"], 1);
  EXPECT_EQ(workers["BUSY"], 0);
  ASSERT_OK_AND_ASSIGN(ended, store_->ExpireLeases(2));
  EXPECT_EQ(ended, 0);

  // Attempt 2 loses a worker too: with max_attempts = 2 the job fails, naming the worker.
  const std::string second = Register("second");
  ASSERT_OK_AND_ASSIGN(started, store_->StartNextAttempt());
  ASSERT_EQ(started, job_id);
  Beat(second, "", absl::Milliseconds(50));
  absl::SleepFor(absl::Milliseconds(150));
  ASSERT_OK_AND_ASSIGN(ended, store_->ExpireLeases(2));
  EXPECT_EQ(ended, 1);
  ASSERT_OK_AND_ASSIGN(job, store_->GetJob(job_id));
  EXPECT_EQ(job.state(), bpnas::v1::FAILED);
  EXPECT_EQ(job.attempts(), 2u);
  EXPECT_NE(job.error().find(second), std::string::npos) << job.error();
  EXPECT_NE(job.error().find("gave up after 2 attempts"), std::string::npos) << job.error();
}

// ---- progress ----

TEST_F(JobStoreTest, AppendProgressStoresARepeatOnceAndRefusesAStaleToken) {
  Running r = StartOneRankJob("progress");
  ASSERT_OK_AND_ASSIGN(
      std::vector<bool> running,
      store_->AppendProgress({Report(r.token, 10, "warmup", 2.5), Report(r.token, 20, "search", 2.0),
                              Report(r.token, 10, "warmup", 9.9), Report("no-such-token", 1, "x", 0)}));
  EXPECT_EQ(running, std::vector<bool>({true, true, true, false}));
  // A report repeated in a later batch is ignored too.
  ASSERT_OK_AND_ASSIGN(running, store_->AppendProgress({Report(r.token, 20, "search", 7.7)}));
  EXPECT_EQ(running, std::vector<bool>({true}));

  ProgressCursor cursor;
  ASSERT_OK_AND_ASSIGN(std::vector<Progress> rows, store_->ListProgress(r.job_id, &cursor, 100));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].step(), 10);
  EXPECT_DOUBLE_EQ(rows[0].cross_entropy(), 2.5);
  EXPECT_EQ(rows[1].step(), 20);
  EXPECT_DOUBLE_EQ(rows[1].cross_entropy(), 2.0);
  EXPECT_EQ(rows[1].attempt(), 1u);
  EXPECT_GT(rows[1].reported_unix_ms(), 0);
  EXPECT_EQ(cursor.attempt, 1u);
  EXPECT_EQ(cursor.step, 20);

  ASSERT_OK_AND_ASSIGN(Job job, store_->GetJob(r.job_id));
  EXPECT_EQ(job.phase(), "search");
  ASSERT_TRUE(job.has_latest_progress());
  EXPECT_EQ(job.latest_progress().step(), 20);

  // An out-of-order older report does not move the phase back.
  ASSERT_OK(store_->AppendProgress({Report(r.token, 15, "warmup", 1.0)}).status());
  ASSERT_OK_AND_ASSIGN(job, store_->GetJob(r.job_id));
  EXPECT_EQ(job.phase(), "search");

  // Once the attempt has ended the token is stale: refused and not stored.
  ASSERT_OK(store_->CancelJob(r.job_id, "stop").status());
  ASSERT_OK_AND_ASSIGN(running, store_->AppendProgress({Report(r.token, 30, "search", 1.0)}));
  EXPECT_EQ(running, std::vector<bool>({false}));
  ASSERT_OK_AND_ASSIGN(rows, store_->ListProgress(r.job_id, &cursor, 100));
  EXPECT_TRUE(rows.empty());
}

TEST_F(JobStoreTest, AppendProgressTakesAnyBytesInTokensAndPhasesWithoutSpoilingTheBatch) {
  Running r = StartOneRankJob("odd-bytes");
  // Tokens and phases travel as array literals: quotes, backslashes, commas and braces must not
  // break the batch for the other reports in it.
  ASSERT_OK_AND_ASSIGN(std::vector<bool> running,
                       store_->AppendProgress(
                           {Report("a\"b\\c,{d}", 1, "x", 0), Report(r.token, 5, "we\"ird,{phase}\\", 1.5)}));
  EXPECT_EQ(running, std::vector<bool>({false, true}));
  ProgressCursor cursor;
  ASSERT_OK_AND_ASSIGN(std::vector<Progress> rows, store_->ListProgress(r.job_id, &cursor, 100));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].phase(), "we\"ird,{phase}\\");
}

TEST_F(JobStoreTest, ProgressAfterTheLastCheckpointOfAFailedAttemptIsSuperseded) {
  Running r = StartOneRankJob("superseded");
  ASSERT_OK(store_
                ->AppendProgress({Report(r.token, 10, "search", 1), Report(r.token, 20, "search", 1),
                                  Report(r.token, 30, "search", 1)})
                .status());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobWriter> w, store_->BeginCheckpoint(r.token, 20));
  ASSERT_OK(w->Append("state"));
  ASSERT_OK(w->Finish(Sha256Hex("state")).status());
  // The attempt fails: the next one resumes at step 20, so step 30 will be reported again.
  ASSERT_OK_AND_ASSIGN(bpnas::v1::JobState state,
                       store_->CompleteAttempt(r.token, false, "boom", SearchResult(), 0, 3));
  EXPECT_EQ(state, bpnas::v1::QUEUED);
  ProgressCursor cursor;
  ASSERT_OK_AND_ASSIGN(std::vector<Progress> rows, store_->ListProgress(r.job_id, &cursor, 100));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].step(), 10);
  EXPECT_EQ(rows[1].step(), 20);
}

TEST_F(JobStoreTest, ListProgressPagesInStepOrder) {
  Running r = StartOneRankJob("pages");
  std::vector<ProgressReport> batch;
  for (int step = 1; step <= 25; ++step) batch.push_back(Report(r.token, step * 10, "search", step));
  ASSERT_OK_AND_ASSIGN(std::vector<bool> running, store_->AppendProgress(batch));
  EXPECT_EQ(running, std::vector<bool>(25, true));
  ProgressCursor cursor;
  std::vector<int64_t> steps;
  for (int page = 0; page < 10; ++page) {
    ASSERT_OK_AND_ASSIGN(std::vector<Progress> rows, store_->ListProgress(r.job_id, &cursor, 10));
    if (rows.empty()) break;
    for (const Progress& p : rows) steps.push_back(p.step());
  }
  ASSERT_EQ(steps.size(), 25u);
  for (int i = 0; i < 25; ++i) EXPECT_EQ(steps[i], (i + 1) * 10);
  EXPECT_EQ(store_->ListProgress("j-000000000000", &cursor, 10).status().code(), absl::StatusCode::kNotFound);
}

// ---- checkpoints, artifacts, completion ----

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  uint32_t x = 2463534242u + seed;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x);
  }
  return s;
}

// Reads a blob whole, checking that no chunk exceeds 1 MiB.
std::string ReadAll(BlobReader& reader) {
  std::string all, chunk;
  while (true) {
    absl::StatusOr<bool> more = reader.Next(&chunk);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    EXPECT_LE(chunk.size(), size_t{1} << 20);
    all += chunk;
  }
  return all;
}

TEST_F(JobStoreTest, CheckpointAndArtifactRoundTripInChunks) {
  Running r = StartOneRankJob("blobs");
  EXPECT_EQ(store_->OpenLatestCheckpoint(r.token).status().code(), absl::StatusCode::kNotFound);

  // Odd sizes (not multiples of the hash block) and one Append bigger than a chunk row.
  const std::vector<size_t> sizes = {1000, 65, (size_t{5} << 19) + 3, 1 << 20, 7};
  std::string checkpoint;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobWriter> writer, store_->BeginCheckpoint(r.token, 123));
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::string piece = Pattern(sizes[i], static_cast<int>(i));
    ASSERT_OK(writer->Append(piece));
    checkpoint += piece;
  }
  EXPECT_EQ(writer->bytes_written(), static_cast<int64_t>(checkpoint.size()));
  ASSERT_OK(writer->Finish(Sha256Hex(checkpoint)).status());

  // A worker of the next attempt is told there is a checkpoint and reads it back.
  EXPECT_TRUE(Beat(r.worker_id, r.token).assignment().has_checkpoint());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobReader> reader, store_->OpenLatestCheckpoint(r.token));
  EXPECT_EQ(reader->step(), 123);
  EXPECT_EQ(reader->total_bytes(), static_cast<int64_t>(checkpoint.size()));
  EXPECT_EQ(reader->sha256(), Sha256Hex(checkpoint));
  EXPECT_TRUE(ReadAll(*reader) == checkpoint);

  // The artifact exists only once the job has succeeded.
  EXPECT_EQ(store_->OpenArtifact(r.job_id).status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string artifact = Pattern(3 * (1 << 20) + 11, 99);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobWriter> art, store_->BeginArtifact(r.token));
  for (size_t at = 0; at < artifact.size(); at += 1 << 20)
    ASSERT_OK(art->Append(artifact.substr(at, 1 << 20)));
  ASSERT_OK_AND_ASSIGN(int64_t artifact_id, art->Finish(Sha256Hex(artifact)));
  EXPECT_EQ(store_->OpenArtifact(r.job_id).status().code(), absl::StatusCode::kFailedPrecondition);

  SearchResult result;
  result.set_cost(42);
  result.set_test_accuracy(91.5);
  ASSERT_OK_AND_ASSIGN(auto state, store_->CompleteAttempt(r.token, true, "", result, artifact_id, 3));
  EXPECT_EQ(state, bpnas::v1::SUCCEEDED);
  ASSERT_OK_AND_ASSIGN(Job job, store_->GetJob(r.job_id));
  EXPECT_EQ(job.state(), bpnas::v1::SUCCEEDED);
  EXPECT_DOUBLE_EQ(job.result().test_accuracy(), 91.5);
  EXPECT_EQ(job.artifact_sha256(), Sha256Hex(artifact));
  EXPECT_EQ(job.artifact_bytes(), static_cast<int64_t>(artifact.size()));
  EXPECT_EQ(Workers()["IDLE"], 1);

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobReader> fetch, store_->OpenArtifact(r.job_id));
  EXPECT_EQ(fetch->sha256(), Sha256Hex(artifact));
  EXPECT_TRUE(ReadAll(*fetch) == artifact);
}

TEST_F(JobStoreTest, BlobWithTheWrongChecksumIsDataLossAndNeverVisible) {
  Running r = StartOneRankJob("corrupt");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobWriter> writer, store_->BeginCheckpoint(r.token, 5));
  ASSERT_OK(writer->Append("some bytes"));
  absl::StatusOr<int64_t> finished = writer->Finish(Sha256Hex("other bytes"));
  EXPECT_EQ(finished.status().code(), absl::StatusCode::kDataLoss) << finished.status();
  EXPECT_EQ(store_->OpenLatestCheckpoint(r.token).status().code(), absl::StatusCode::kNotFound);
  // An unfinished writer leaves nothing visible either.
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobWriter> abandoned, store_->BeginCheckpoint(r.token, 6));
    ASSERT_OK(abandoned->Append("half"));
  }
  EXPECT_EQ(store_->OpenLatestCheckpoint(r.token).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobStoreTest, NewerCheckpointsReplaceOlderOnes) {
  Running r = StartOneRankJob("ckpts");
  for (int64_t step : {100, 200, 300}) {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobWriter> writer, store_->BeginCheckpoint(r.token, step));
    const std::string data = Pattern(100, static_cast<int>(step));
    ASSERT_OK(writer->Append(data));
    ASSERT_OK(writer->Finish(Sha256Hex(data)).status());
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobReader> reader, store_->OpenLatestCheckpoint(r.token));
  EXPECT_EQ(reader->step(), 300);
  pqxx::connection conn(PgTestEnv::Get().dsn());
  pqxx::work tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM blobs WHERE kind = 'CHECKPOINT'")[0].as<int>(), 2);
}

TEST_F(JobStoreTest, EndedTokenIsRefusedEverywhere) {
  Running r = StartOneRankJob("ended");
  ASSERT_OK_AND_ASSIGN(auto state,
                       store_->CompleteAttempt(r.token, false, "out of memory", SearchResult(), 0, 3));
  EXPECT_EQ(state, bpnas::v1::QUEUED);
  ASSERT_OK_AND_ASSIGN(Job job, store_->GetJob(r.job_id));
  EXPECT_NE(job.error().find("out of memory"), std::string::npos);
  EXPECT_EQ(Workers()["IDLE"], 1);

  absl::StatusOr<bpnas::v1::JobState> again =
      store_->CompleteAttempt(r.token, true, "", SearchResult(), 0, 3);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
  EXPECT_EQ(store_->BeginCheckpoint(r.token, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->BeginArtifact(r.token).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->OpenLatestCheckpoint(r.token).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_OK_AND_ASSIGN(std::vector<bool> running, store_->AppendProgress({Report(r.token, 1, "search", 1)}));
  EXPECT_EQ(running, std::vector<bool>({false}));
  // The worker still carrying the ended token is told to stop.
  EXPECT_EQ(Beat(r.worker_id, r.token).action(), HeartbeatResponse::STOP);
}

TEST_F(JobStoreTest, WriterStopsWhenTheAttemptEndsMidUpload) {
  Running r = StartOneRankJob("mid-upload");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BlobWriter> writer, store_->BeginArtifact(r.token));
  ASSERT_OK(writer->Append("first"));
  ASSERT_OK(store_->CancelJob(r.job_id, "cancelled mid-upload").status());
  EXPECT_EQ(writer->Append("second").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer->Finish(Sha256Hex("first")).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobStoreTest, SucceededNeedsAFinishedArtifactOfTheJob) {
  Running r = StartOneRankJob("no-artifact");
  absl::StatusOr<bpnas::v1::JobState> state =
      store_->CompleteAttempt(r.token, true, "", SearchResult(), 12345, 3);
  EXPECT_EQ(state.status().code(), absl::StatusCode::kInvalidArgument) << state.status();
  ASSERT_OK_AND_ASSIGN(Job job, store_->GetJob(r.job_id));
  EXPECT_EQ(job.state(), bpnas::v1::RUNNING);
}

TEST_F(JobStoreTest, FailedAttemptsRetryUntilMaxAttempts) {
  ASSERT_OK_AND_ASSIGN(auto created, store_->CreateJob("", MakeSpec("retry"), 1));
  const std::string worker = Register("w");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    ASSERT_OK_AND_ASSIGN(std::string started, store_->StartNextAttempt());
    ASSERT_EQ(started, created.first.id());
    HeartbeatResponse beat = Beat(worker);
    ASSERT_EQ(beat.action(), HeartbeatResponse::RUN);
    EXPECT_EQ(beat.assignment().attempt(), static_cast<uint32_t>(attempt));
    ASSERT_OK_AND_ASSIGN(auto state,
                         store_->CompleteAttempt(beat.assignment().attempt_token(), false,
                                                 absl::StrCat("crash ", attempt), SearchResult(), 0, 2));
    EXPECT_EQ(state, attempt < 2 ? bpnas::v1::QUEUED : bpnas::v1::FAILED);
  }
  ASSERT_OK_AND_ASSIGN(Job job, store_->GetJob(created.first.id()));
  EXPECT_EQ(job.state(), bpnas::v1::FAILED);
  EXPECT_EQ(job.attempts(), 2u);
  EXPECT_NE(job.error().find("crash 2"), std::string::npos) << job.error();
  EXPECT_NE(job.error().find("gave up after 2 attempts"), std::string::npos) << job.error();
}

// ---- health, migrations, outages ----

TEST_F(JobStoreTest, ReadyOnlyWhenMigrated) {
  ASSERT_OK(store_->CheckReady());
  ASSERT_OK_AND_ASSIGN(std::string empty_dsn, PgTestEnv::Get().CreateEmptyDatabase("not_migrated"));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PgJobStore> bare, PgJobStore::Open(empty_dsn, 1));
  EXPECT_EQ(bare->CheckReady().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Migrations, ApplyingTwiceIsANoOp) {
  ASSERT_OK_AND_ASSIGN(std::string dsn, PgTestEnv::Get().CreateEmptyDatabase("migrate_twice"));
  ASSERT_OK(ApplyMigrations(dsn));
  ASSERT_OK(ApplyMigrations(dsn));
  pqxx::connection conn(dsn);
  pqxx::work tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM schema_migrations")[0].as<size_t>(), EmbeddedMigrations().size());
}

TEST(Migrations, ConcurrentApplyBothSucceed) {
  ASSERT_OK_AND_ASSIGN(std::string dsn, PgTestEnv::Get().CreateEmptyDatabase("migrate_concurrently"));
  absl::Status a, b;
  std::thread ta([&] { a = ApplyMigrations(dsn); });
  std::thread tb([&] { b = ApplyMigrations(dsn); });
  ta.join();
  tb.join();
  ASSERT_OK(a);
  ASSERT_OK(b);
  pqxx::connection conn(dsn);
  pqxx::work tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM schema_migrations")[0].as<size_t>(), EmbeddedMigrations().size());
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM jobs")[0].as<int>(), 0);
}

TEST(Migrations, UnreachableDatabaseIsUnavailableWithoutThePassword) {
  const int port = PickFreePort();
  const std::string dsn = absl::StrCat("host=127.0.0.1 port=", port, " dbname=x user=u password=hunter2");
  absl::Status status = ApplyMigrations(dsn);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find(absl::StrCat("port=", port)), std::string::npos) << status;
  EXPECT_EQ(status.message().find("hunter2"), std::string::npos) << status;
  absl::StatusOr<std::unique_ptr<PgJobStore>> store = PgJobStore::Open(dsn, 1);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable) << store.status();
  EXPECT_EQ(store.status().message().find("hunter2"), std::string::npos) << store.status();
}

TEST(Dsn, RedactedKeepsWhereButNotThePasswordAndATimeoutIsAdded) {
  EXPECT_EQ(RedactedDsn("host=db.example port=5433 dbname=bpnas user=coord password='s3 cret'"),
            "host=db.example port=5433 dbname=bpnas user=coord");
  EXPECT_EQ(RedactedDsn("postgresql://coord:s3cret@db.example:5433/bpnas?sslmode=require"),
            "host=db.example:5433 dbname=bpnas user=coord");
  EXPECT_EQ(WithConnectTimeout("host=h dbname=d"), "host=h dbname=d connect_timeout=10");
  EXPECT_EQ(WithConnectTimeout("host=h connect_timeout=3"), "host=h connect_timeout=3");
  EXPECT_EQ(WithConnectTimeout("postgresql://h/d?sslmode=disable"),
            "postgresql://h/d?sslmode=disable&connect_timeout=10");
}

TEST_F(JobStoreTest, SurvivesAPostgresRestart) {
  ASSERT_OK_AND_ASSIGN(auto created, store_->CreateJob("before-restart", MakeSpec("durable"), 1));
  ASSERT_OK(store_->GetJob(created.first.id()).status());  // the pool now holds a live connection
  ASSERT_OK(PgTestEnv::Get().server().Restart());

  absl::StatusOr<Job> job;
  int unavailable = 0;
  for (int i = 0; i < 20; ++i) {
    job = store_->GetJob(created.first.id());
    if (job.ok()) break;
    ASSERT_EQ(job.status().code(), absl::StatusCode::kUnavailable) << job.status();
    ++unavailable;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_LE(unavailable, 1);
  EXPECT_EQ(job->request_id(), "before-restart");
  // Writes work again too.
  ASSERT_OK_AND_ASSIGN(auto again, store_->CreateJob("before-restart", MakeSpec("durable"), 1));
  EXPECT_FALSE(again.second);
  ASSERT_OK(store_->CreateJob("after-restart", MakeSpec("new"), 1).status());
}

}  // namespace
}  // namespace bpnas
