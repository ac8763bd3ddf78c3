// JobManager: the only code that changes job states (DESIGN.md §1), and the scheduler.
//
// Every transition is one JobStore transaction: Submit (-> QUEUED), the scheduler's gang
// assignment (QUEUED -> RUNNING) and lease expiry (RUNNING -> QUEUED / FAILED), CompleteAttempt
// (RUNNING -> SUCCEEDED / QUEUED / FAILED) and Cancel (-> CANCELLED). The scheduler runs on its own
// thread (never on a gRPC thread): every `schedule_interval`, and at once after Poke().
//
// Thread-safe.
#ifndef BPNAS_SERVER_JOB_MANAGER_H_
#define BPNAS_SERVER_JOB_MANAGER_H_

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bpnas/v1/service.pb.h"
#include "server/job_store.h"

namespace bpnas {

struct JobManagerOptions {
  absl::Duration lease = absl::Seconds(15);              // a worker silent this long loses its work
  absl::Duration heartbeat_interval = absl::Seconds(1);  // what workers are told to keep
  absl::Duration schedule_interval = absl::Milliseconds(500);
  int max_attempts = 3;  // attempts per job before it is FAILED
  int max_ranks = 16;    // largest spec.ranks accepted
};

class JobManager {
 public:
  JobManager(JobStore* store, JobManagerOptions options);
  ~JobManager();  // stops the scheduler

  // Validates `spec` with the same code as the CLI (PlanJob: fields, ranges, a feasible budget),
  // then stores it as a QUEUED job. INVALID_ARGUMENT naming the field (nothing stored) for a bad
  // spec. A repeated non-empty request_id returns the first job with created = false.
  absl::StatusOr<std::pair<bpnas::v1::Job, bool>> Submit(const std::string& request_id,
                                                         const bpnas::v1::JobSpec& spec);
  absl::StatusOr<bpnas::v1::Job> Cancel(const std::string& job_id);
  absl::StatusOr<bpnas::v1::JobState> CompleteAttempt(const std::string& attempt_token, bool succeeded,
                                                      const std::string& error,
                                                      const bpnas::v1::SearchResult& result,
                                                      int64_t artifact_id);

  // Starts / stops the scheduler thread.
  void Start();
  void Stop();
  // Wakes the scheduler now (a job was queued, a worker registered or became idle).
  void Poke();
  // One scheduler pass (expire leases, start every job that can start); exposed for tests.
  absl::Status ScheduleOnce();

  const JobManagerOptions& options() const { return options_; }

 private:
  void Loop();

  JobStore* store_;
  const JobManagerOptions options_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool poked_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_JOB_MANAGER_H_
