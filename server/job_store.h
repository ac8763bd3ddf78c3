// JobStore: everything the coordinator keeps, behind one interface (DESIGN.md §4).
//
// The PostgreSQL implementation (pg_job_store.h) is the only code that knows SQL. Every method is
// one transaction; a job's state change and the rows it implies (attempt, assignments, worker
// states) commit together. Methods are thread-safe (the implementation pools connections).
//
// Errors, by what the caller should do next:
//   INVALID_ARGUMENT     fix the request (e.g. an empty job id)
//   NOT_FOUND            no such job / worker / artifact / checkpoint
//   FAILED_PRECONDITION  the state does not allow it (attempt token of an ended attempt; cancel of a
//                        finished job; artifact of a job that has not succeeded)
//   ABORTED              a transaction conflict: retry the transaction
//   UNAVAILABLE          the database is unreachable: retry the call later
//   INTERNAL             a bug (constraint violation that should not happen, corrupt stored proto)
#ifndef BPNAS_SERVER_JOB_STORE_H_
#define BPNAS_SERVER_JOB_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bpnas/v1/service.pb.h"

namespace bpnas {

// Writes one blob (artifact or checkpoint) chunk by chunk: each Append is stored (committed) at
// once, so a blob of any size never sits whole in memory. The blob becomes visible only after
// Finish(); a writer destroyed unfinished leaves an incomplete blob that readers never see.
class BlobWriter {
 public:
  virtual ~BlobWriter() = default;
  virtual absl::Status Append(std::string_view data) = 0;
  // Marks the blob complete with its checksum and size (checked against what was appended:
  // DATA_LOSS if they disagree). Returns the blob id.
  virtual absl::StatusOr<int64_t> Finish(const std::string& sha256_hex) = 0;
  virtual int64_t bytes_written() const = 0;
};

// Reads one complete blob chunk by chunk, in the order it was written.
class BlobReader {
 public:
  virtual ~BlobReader() = default;
  virtual const std::string& sha256() const = 0;
  virtual int64_t total_bytes() const = 0;
  virtual int64_t step() const = 0;  // checkpoints: the step it was taken at; artifacts: 0
  // Sets *chunk to the next chunk and returns true, or returns false at the end.
  virtual absl::StatusOr<bool> Next(std::string* chunk) = 0;
};

struct ProgressReport {
  std::string attempt_token;
  bpnas::v1::Progress progress;  // reported_unix_ms is set by the store
};

// Where a reader of a job's progress stands: rows are ordered by (attempt, step).
struct ProgressCursor {
  uint32_t attempt = 0;
  int64_t step = -1;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // ---- jobs ----

  // Stores a new QUEUED job (spec already normalized and validated; `budget` resolved), or, when
  // `request_id` is non-empty and an earlier job carries it, returns that job and created = false.
  virtual absl::StatusOr<std::pair<bpnas::v1::Job, bool>> CreateJob(const std::string& request_id,
                                                                    const bpnas::v1::JobSpec& spec,
                                                                    double budget) = 0;
  // The job with its latest (non-superseded) progress row, result and artifact checksum.
  virtual absl::StatusOr<bpnas::v1::Job> GetJob(const std::string& job_id) = 0;
  // Newest first; state JOB_STATE_UNSPECIFIED = every state.
  virtual absl::StatusOr<std::vector<bpnas::v1::Job>> ListJobs(bpnas::v1::JobState state, int limit) = 0;
  virtual absl::StatusOr<std::map<bpnas::v1::JobState, int64_t>> CountJobsByState() = 0;
  // QUEUED or RUNNING -> CANCELLED with `reason` as the error; the running attempt ends (state
  // CANCELLED) and its assignments become inactive (their workers get STOP and go back to idle).
  // Already CANCELLED: returns the job unchanged. SUCCEEDED / FAILED: FAILED_PRECONDITION.
  virtual absl::StatusOr<bpnas::v1::Job> CancelJob(const std::string& job_id, const std::string& reason) = 0;

  // ---- workers ----

  // A new worker row, state IDLE, lease until now + lease. Returns its id.
  virtual absl::StatusOr<std::string> RegisterWorker(const bpnas::v1::RegisterRequest& request,
                                                     absl::Duration lease) = 0;
  // Renews the worker's lease and says what it should do:
  //   it has an active assignment        -> RUN with the assignment (spec, rank, token, ...);
  //   `attempt_token` is set but no longer active (cancelled, attempt ended) -> STOP;
  //   otherwise                          -> IDLE.
  // NOT_FOUND if the worker is unknown or was declared LOST (it must register again).
  virtual absl::StatusOr<bpnas::v1::HeartbeatResponse> Heartbeat(const std::string& worker_id,
                                                                 const std::string& attempt_token,
                                                                 absl::Duration lease) = 0;
  // "IDLE", "BUSY", "LOST" -> count.
  virtual absl::StatusOr<std::map<std::string, int64_t>> CountWorkersByState() = 0;

  // ---- scheduling (called by the job manager only) ----

  // Extends the lease of every BUSY worker to at least now + lease. Called when a coordinator
  // starts: while no coordinator ran, workers could not heartbeat, and that must not cost a running
  // attempt. IDLE workers keep their lease: a live one renews it with its next heartbeat, and one
  // that died meanwhile (an earlier `bpnas up`'s, say) must not be handed the next job.
  virtual absl::Status RenewBusyWorkerLeases(absl::Duration lease) = 0;

  // Workers whose lease has expired become LOST; every RUNNING attempt with an assignment on such a
  // worker ends (state LOST, error naming the worker), its other assignments become inactive, and
  // the job goes back to QUEUED, or to FAILED ("attempt N lost worker W; gave up after N
  // attempts") when it has had max_attempts attempts. Returns the number of attempts ended.
  virtual absl::StatusOr<int> ExpireLeases(int max_attempts) = 0;
  // Gang assignment: takes the oldest QUEUED job for which spec.ranks IDLE workers of its device
  // kind with live leases exist (SKIP LOCKED, so concurrent coordinators never double-assign), and
  // in one transaction creates attempt attempts+1, one assignment (random token) per rank, marks
  // the workers BUSY and the job RUNNING. Returns the job id, or "" when no job could start.
  virtual absl::StatusOr<std::string> StartNextAttempt() = 0;

  // Rank 0 of a running attempt records where its c10d store listens; later heartbeats of every
  // rank of the attempt carry it in Assignment.rendezvous. FAILED_PRECONDITION if the token is not
  // active or not rank 0's; INVALID_ARGUMENT for an empty address.
  virtual absl::Status PublishRendezvous(const std::string& attempt_token, const std::string& address) = 0;

  // ---- progress ----

  // Stores every report whose token belongs to an active assignment, once per (job, attempt,
  // step) (a repeat is ignored), and sets the job's phase from the newest stored one. Returns, per
  // report, true if its attempt is still running, false if the token is stale (the worker must
  // stop). One transaction for the whole batch.
  virtual absl::StatusOr<std::vector<bool>> AppendProgress(const std::vector<ProgressReport>& reports) = 0;
  // Non-superseded progress rows of `job_id` after `cursor` in (attempt, step) order, at most
  // `limit`; advances *cursor to the last row returned.
  virtual absl::StatusOr<std::vector<bpnas::v1::Progress>> ListProgress(const std::string& job_id,
                                                                        ProgressCursor* cursor,
                                                                        int limit) = 0;

  // ---- checkpoints and artifacts ----

  // FAILED_PRECONDITION if the token is not active.
  virtual absl::StatusOr<std::unique_ptr<BlobWriter>> BeginCheckpoint(const std::string& attempt_token,
                                                                      int64_t step) = 0;
  // The newest complete checkpoint of the token's job (from any attempt); NOT_FOUND if none.
  virtual absl::StatusOr<std::unique_ptr<BlobReader>> OpenLatestCheckpoint(
      const std::string& attempt_token) = 0;
  // FAILED_PRECONDITION if the token is not active.
  virtual absl::StatusOr<std::unique_ptr<BlobWriter>> BeginArtifact(const std::string& attempt_token) = 0;
  // Ends the token's attempt. succeeded: the job becomes SUCCEEDED with `result` and the finished
  // blob `artifact_id` as its artifact. Otherwise the attempt is FAILED with `error` and the job
  // goes back to QUEUED, or FAILED once it has had max_attempts attempts. Either way the attempt's
  // assignments become inactive and their workers IDLE. Returns the job's new state.
  // FAILED_PRECONDITION if the token is not active (the attempt already ended).
  virtual absl::StatusOr<bpnas::v1::JobState> CompleteAttempt(const std::string& attempt_token,
                                                              bool succeeded, const std::string& error,
                                                              const bpnas::v1::SearchResult& result,
                                                              int64_t artifact_id, int max_attempts) = 0;
  // The artifact of a SUCCEEDED job; FAILED_PRECONDITION naming the state otherwise.
  virtual absl::StatusOr<std::unique_ptr<BlobReader>> OpenArtifact(const std::string& job_id) = 0;

  // ---- health ----

  // OK when the database answers and every migration is applied.
  virtual absl::Status CheckReady() = 0;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_JOB_STORE_H_
