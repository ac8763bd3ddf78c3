// What PgJobStore does when a transaction fails: a serialization failure, a connection lost
// before or while committing. A FaultInjectingPool wraps the real pool over a real PostgreSQL
// (pg_test_env.h) and raises the fault after the store's statements ran, so every check of "nothing
// half-done" reads what the database really kept.
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "server/pg/pg_job_store.h"
#include "server/pg/pool.h"
#include "tests/fault_injecting_pool.h"
#include "tests/pg_test_env.h"

namespace bpnas {
namespace {

using bpnas::v1::HeartbeatResponse;
using bpnas::v1::Job;
using bpnas::v1::JobSpec;
using bpnas::v1::SearchResult;

constexpr absl::Duration kLease = absl::Seconds(60);

JobSpec Spec(const std::string& name) {
  JobSpec spec;
  spec.set_name(name);
  spec.mutable_model()->set_name("tiny");
  spec.mutable_dataset()->set_kind("synthetic");
  spec.set_ranks(1);
  spec.set_device(bpnas::v1::CPU);
  return spec;
}

// One number from the test database, read on a connection of its own.
int64_t Count(const std::string& sql) {
  pqxx::connection conn(PgTestEnv::Get().dsn());
  pqxx::work tx(conn);
  return tx.exec1(sql)[0].as<int64_t>();
}

class StoreFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(PgTestEnv::Get().Reset().ok());
    auto real = PgConnectionPool::Create(PgTestEnv::Get().dsn(), PgJobStore::PoolOptions(2));
    ASSERT_TRUE(real.ok()) << real.status();
    faults_ = std::make_shared<FaultInjectingPool>(*real);
    auto store = PgJobStore::Open(faults_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // A 1-rank job running on a fresh worker.
  struct Running {
    std::string job_id, worker_id, token;
  };
  Running Start(const std::string& name) {
    Running r;
    auto created = store_->CreateJob("", Spec(name), 1e6);
    EXPECT_TRUE(created.ok()) << created.status();
    bpnas::v1::RegisterRequest worker;
    worker.set_name("w-" + name);
    worker.set_device(bpnas::v1::CPU);
    r.worker_id = store_->RegisterWorker(worker, kLease).value_or("");
    r.job_id = store_->StartNextAttempt().value_or("");
    EXPECT_EQ(r.job_id, created->first.id());
    auto beat = store_->Heartbeat(r.worker_id, "", kLease);
    EXPECT_TRUE(beat.ok()) << beat.status();
    EXPECT_EQ(beat->action(), HeartbeatResponse::RUN);
    r.token = beat->assignment().attempt_token();
    return r;
  }

  // Fails the test unless `r`'s attempt is exactly as Start left it: job RUNNING on
  // attempt 1, the attempt RUNNING, its assignment active, the worker BUSY.
  void ExpectStillRunning(const Running& r) {
    auto job = store_->GetJob(r.job_id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state(), bpnas::v1::RUNNING);
    EXPECT_EQ(job->attempts(), 1u);
    EXPECT_EQ(job->error(), "");
    EXPECT_EQ(Count("SELECT count(*) FROM attempts WHERE state = 'RUNNING'"), 1);
    EXPECT_EQ(Count("SELECT count(*) FROM assignments WHERE active"), 1);
    EXPECT_EQ(Count("SELECT count(*) FROM workers WHERE state = 'BUSY'"), 1);
  }

  std::shared_ptr<FaultInjectingPool> faults_;
  std::unique_ptr<PgJobStore> store_;
};

TEST_F(StoreFaultsTest, ASerializationFailureIsRetriedAndTakesEffectOnce) {
  faults_->Inject("create job", PgFault::kSerializationFailure, 1);
  auto created = store_->CreateJob("", Spec("conflict"), 1e6);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->second);
  EXPECT_EQ(faults_->raised(), 1) << "the fault must have fired for this test to mean anything";
  // The first run inserted a job and was rolled back; only the repeat's job is there.
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
  EXPECT_TRUE(store_->GetJob(created->first.id()).ok());
}

TEST_F(StoreFaultsTest, APersistingConflictIsAbortedAndLeavesNothingHalfDone) {
  Running r = Start("persisting");
  // The first run and both of the pool's repeats fail.
  faults_->Inject("complete attempt", PgFault::kSerializationFailure, 3);
  auto state = store_->CompleteAttempt(r.token, false, "crashed", SearchResult(), 0, 3);
  EXPECT_EQ(state.status().code(), absl::StatusCode::kAborted) << state.status();
  EXPECT_EQ(faults_->raised(), 3);
  ExpectStillRunning(r);
  // The caller retries the transaction: now it goes through.
  auto again = store_->CompleteAttempt(r.token, false, "crashed", SearchResult(), 0, 3);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, bpnas::v1::QUEUED);
  EXPECT_EQ(Count("SELECT count(*) FROM workers WHERE state = 'IDLE'"), 1);
}

TEST_F(StoreFaultsTest, AConnectionLostBeforeCommitIsUnavailableAndNothingIsStored) {
  Running r = Start("lost");
  faults_->Inject("cancel job", PgFault::kLostBeforeCommit, 1);
  auto cancelled = store_->CancelJob(r.job_id, "user asked");
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kUnavailable) << cancelled.status();
  EXPECT_EQ(faults_->raised(), 1);
  ExpectStillRunning(r);
  // The pool dropped the connection; the next call connects again and the retry works.
  auto retried = store_->CancelJob(r.job_id, "user asked");
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->state(), bpnas::v1::CANCELLED);
  EXPECT_EQ(Count("SELECT count(*) FROM assignments WHERE active"), 0);
}

TEST_F(StoreFaultsTest, ACommitInDoubtIsUnavailableAndTheRetryFindsTheJobStoredOnce) {
  faults_->Inject("create job", PgFault::kLostAtCommit, 1);
  auto first = store_->CreateJob("req-1", Spec("in-doubt"), 1e6);
  ASSERT_EQ(first.status().code(), absl::StatusCode::kUnavailable) << first.status();
  EXPECT_NE(first.status().message().find("may or may not have been stored"), std::string::npos)
      << first.status();
  EXPECT_EQ(faults_->raised(), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1) << "the commit went through";
  auto retried = store_->CreateJob("req-1", Spec("in-doubt"), 1e6);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_FALSE(retried->second) << "the retry must find the job the lost commit stored";
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
}

TEST_F(StoreFaultsTest, ABlobFinishLostBeforeCommitStaysInvisibleUntilRepeated) {
  Running r = Start("blob-lost");
  auto writer = store_->BeginCheckpoint(r.token, 10);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append("checkpoint bytes").ok());
  faults_->Inject("finish blob", PgFault::kLostBeforeCommit, 1);
  auto id = (*writer)->Finish(Sha256Hex("checkpoint bytes"));
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable) << id.status();
  EXPECT_EQ(store_->OpenLatestCheckpoint(r.token).status().code(), absl::StatusCode::kNotFound);
  auto repeated = (*writer)->Finish(Sha256Hex("checkpoint bytes"));
  ASSERT_TRUE(repeated.ok()) << repeated.status();
  auto reader = store_->OpenLatestCheckpoint(r.token);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->step(), 10);
}

TEST_F(StoreFaultsTest, ABlobFinishWhoseCommitWasInDoubtCanBeRepeated) {
  Running r = Start("blob-doubt");
  auto writer = store_->BeginCheckpoint(r.token, 20);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append("checkpoint bytes").ok());
  faults_->Inject("finish blob", PgFault::kLostAtCommit, 1);
  auto id = (*writer)->Finish(Sha256Hex("checkpoint bytes"));
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable) << id.status();
  // The repeat must not mistake "already complete" for "the attempt has ended".
  auto repeated = (*writer)->Finish(Sha256Hex("checkpoint bytes"));
  ASSERT_TRUE(repeated.ok()) << repeated.status();
  EXPECT_EQ(Count("SELECT count(*) FROM blobs WHERE kind = 'CHECKPOINT' AND complete"), 1);
  ExpectStillRunning(r);
}

}  // namespace
}  // namespace bpnas
