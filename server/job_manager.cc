#include "server/job_manager.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "spec/spec.h"

namespace bpnas {

JobManager::JobManager(JobStore* store, JobManagerOptions options) : store_(store), options_(options) {}

JobManager::~JobManager() { Stop(); }

absl::StatusOr<std::pair<bpnas::v1::Job, bool>> JobManager::Submit(const std::string& request_id,
                                                                   const bpnas::v1::JobSpec& spec) {
  BPNAS_ASSIGN_OR_RETURN(JobPlan plan, PlanJob(spec, /*check_feasible=*/true));
  if (int(plan.spec.ranks()) > options_.max_ranks) {
    return absl::InvalidArgumentError(absl::StrCat("ranks: at most ", options_.max_ranks,
                                                   " rank(s) per job on this coordinator, got ",
                                                   plan.spec.ranks()));
  }
  if (request_id.size() > 200) {
    return absl::InvalidArgumentError("request_id: at most 200 characters");
  }
  auto created = store_->CreateJob(request_id, plan.spec, plan.has_budget ? plan.budget : 0.0);
  if (created.ok() && created->second) Poke();
  return created;
}

absl::StatusOr<bpnas::v1::Job> JobManager::Cancel(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id: required");
  auto job = store_->CancelJob(job_id, "cancelled by the user");
  if (job.ok()) Poke();  // its workers are idle again
  return job;
}

absl::StatusOr<bpnas::v1::JobState> JobManager::CompleteAttempt(const std::string& attempt_token,
                                                                bool succeeded, const std::string& error,
                                                                const bpnas::v1::SearchResult& result,
                                                                int64_t artifact_id) {
  auto state =
      store_->CompleteAttempt(attempt_token, succeeded, error, result, artifact_id, options_.max_attempts);
  if (state.ok()) Poke();
  return state;
}

absl::Status JobManager::ScheduleOnce() {
  BPNAS_RETURN_IF_ERROR(store_->ExpireLeases(options_.max_attempts).status());
  for (;;) {
    BPNAS_ASSIGN_OR_RETURN(std::string started, store_->StartNextAttempt());
    if (started.empty()) return absl::OkStatus();
  }
}

void JobManager::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  // Workers could not heartbeat while no coordinator ran: give the busy ones a full lease to
  // reconnect before their attempt counts as lost. Idle ones get no grace, so a worker that died
  // meanwhile is not handed a job. (If the store is unreachable, the scheduler says so.)
  (void)store_->RenewBusyWorkerLeases(options_.lease);
  stopping_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void JobManager::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void JobManager::Poke() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    poked_ = true;
  }
  wake_.notify_all();
}

void JobManager::Loop() {
  std::string last_error;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_for(lock, absl::ToChronoMilliseconds(options_.schedule_interval),
                     [&] { return stopping_ || poked_; });
      if (stopping_) return;
      poked_ = false;
    }
    absl::Status s = ScheduleOnce();
    // A database outage shows up here every pass: say it once, and once when it heals.
    std::string now = s.ok() ? "" : std::string(s.message());
    if (now != last_error) {
      if (!s.ok())
        LogWarning("scheduler", StatusToString(s));
      else
        LogInfo("scheduler", "store reachable again");
      last_error = now;
    }
  }
}

}  // namespace bpnas
