// PgJobStore: the JobStore on PostgreSQL (DESIGN.md §4). server/pg/ is the only code in bpnas
// that knows SQL; this file holds the store's queries, blobs.h the blob I/O, pool.h the connections.
//
//   BPNAS_RETURN_IF_ERROR(ApplyMigrations(dsn));
//   BPNAS_ASSIGN_OR_RETURN(std::unique_ptr<PgJobStore> store, PgJobStore::Open(dsn, 8));
//   BPNAS_ASSIGN_OR_RETURN(auto created, store->CreateJob(request_id, spec, budget));
//
// Every method runs as one transaction on a connection taken from a PgPool (server/pg/pool.h; at
// most `pool_size` connections, a caller waits while all are in use). The pool runs a transaction
// again after a serialization failure or deadlock, and returns ABORTED only if that persists. Values always
// travel as query parameters, never inside the SQL text. Times (leases, created/updated, reported) come from
// the database clock, so several coordinators sharing one database agree on them.
//
// Losing the database: a call that finds it unreachable returns UNAVAILABLE and throws away the
// pooled connections; the next call connects again, so a PostgreSQL restart heals without
// restarting the coordinator. A transaction that broke while committing also returns UNAVAILABLE
// (its outcome is unknown; every write here is safe to retry: CreateJob with a request id returns
// the first job, CancelJob of a cancelled job returns it unchanged, CompleteAttempt of an ended
// attempt is FAILED_PRECONDITION).
//
// Ids: jobs "j-" + 12 lowercase hex digits, workers "w-" + 12; attempt tokens are 32 hex digits.
// All come from a cryptographically secure random source.
//
// Thread-safe. Blob readers and writers take a pooled connection per call only, so they may live
// as long as a stream does without pinning a connection; they are not themselves thread-safe.
#ifndef BPNAS_SERVER_PG_PG_JOB_STORE_H_
#define BPNAS_SERVER_PG_PG_JOB_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/job_store.h"
#include "server/pg/pool.h"

namespace bpnas {

class PgJobStore : public JobStore {
 public:
  // Connects once to check that the database answers (UNAVAILABLE if not; the error names host,
  // port, database and user, never the password). Does not migrate: call ApplyMigrations first.
  // pool_size < 1: INVALID_ARGUMENT.
  static absl::StatusOr<std::unique_ptr<PgJobStore>> Open(const std::string& dsn, int pool_size);
  // The same over a given pool, which must have been created with PoolOptions() (the store's
  // prepared statements); tests pass a pool that wraps the real one to inject faults.
  static absl::StatusOr<std::unique_ptr<PgJobStore>> Open(std::shared_ptr<PgPool> pool);
  // What a PgConnectionPool for this store needs: pool_size connections and the prepared
  // statements.
  static PgPoolOptions PoolOptions(int pool_size);
  ~PgJobStore() override;

  PgJobStore(const PgJobStore&) = delete;
  PgJobStore& operator=(const PgJobStore&) = delete;

  absl::StatusOr<std::pair<bpnas::v1::Job, bool>> CreateJob(const std::string& request_id,
                                                            const bpnas::v1::JobSpec& spec,
                                                            double budget) override;
  absl::StatusOr<bpnas::v1::Job> GetJob(const std::string& job_id) override;
  // limit must be positive (INVALID_ARGUMENT otherwise).
  absl::StatusOr<std::vector<bpnas::v1::Job>> ListJobs(bpnas::v1::JobState state, int limit) override;
  // Every state appears, with 0 where no job is in it.
  absl::StatusOr<std::map<bpnas::v1::JobState, int64_t>> CountJobsByState() override;
  absl::StatusOr<bpnas::v1::Job> CancelJob(const std::string& job_id, const std::string& reason) override;

  absl::StatusOr<std::string> RegisterWorker(const bpnas::v1::RegisterRequest& request,
                                             absl::Duration lease) override;
  absl::StatusOr<bpnas::v1::HeartbeatResponse> Heartbeat(const std::string& worker_id,
                                                         const std::string& attempt_token,
                                                         absl::Duration lease) override;
  // IDLE, BUSY and LOST always appear, with 0 where no worker is in the state.
  absl::StatusOr<std::map<std::string, int64_t>> CountWorkersByState() override;

  absl::Status RenewBusyWorkerLeases(absl::Duration lease) override;
  absl::StatusOr<int> ExpireLeases(int max_attempts) override;
  absl::Status PublishRendezvous(const std::string& attempt_token, const std::string& address) override;
  absl::StatusOr<std::string> StartNextAttempt() override;

  absl::StatusOr<std::vector<bool>> AppendProgress(const std::vector<ProgressReport>& reports) override;
  // NOT_FOUND if the job does not exist. Returned rows carry the attempt, step and report time
  // the store recorded (whatever the reporter put in those fields).
  absl::StatusOr<std::vector<bpnas::v1::Progress>> ListProgress(const std::string& job_id,
                                                                ProgressCursor* cursor, int limit) override;

  // Checkpoint and artifact writers refuse (FAILED_PRECONDITION) an Append or Finish once the
  // attempt has ended. Finish of a checkpoint keeps the job's two newest complete checkpoints and
  // deletes older ones.
  absl::StatusOr<std::unique_ptr<BlobWriter>> BeginCheckpoint(const std::string& attempt_token,
                                                              int64_t step) override;
  // FAILED_PRECONDITION if the token is not active.
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenLatestCheckpoint(const std::string& attempt_token) override;
  absl::StatusOr<std::unique_ptr<BlobWriter>> BeginArtifact(const std::string& attempt_token) override;
  // succeeded with an artifact_id that is not a finished artifact of this attempt's job:
  // INVALID_ARGUMENT.
  absl::StatusOr<bpnas::v1::JobState> CompleteAttempt(const std::string& attempt_token, bool succeeded,
                                                      const std::string& error,
                                                      const bpnas::v1::SearchResult& result,
                                                      int64_t artifact_id, int max_attempts) override;
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenArtifact(const std::string& job_id) override;

  // Missing migrations: FAILED_PRECONDITION naming the first one.
  absl::Status CheckReady() override;

 private:
  explicit PgJobStore(std::shared_ptr<PgPool> pool);

  absl::StatusOr<std::unique_ptr<BlobWriter>> BeginBlob(const std::string& attempt_token, const char* kind,
                                                        int64_t step);

  // Shared with the blob readers and writers, which may outlive a call.
  std::shared_ptr<PgPool> pool_;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_PG_PG_JOB_STORE_H_
