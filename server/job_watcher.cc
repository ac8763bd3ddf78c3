#include "server/job_watcher.h"

#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace bpnas {
namespace {

using bpnas::v1::Job;
using bpnas::v1::Progress;
using bpnas::v1::WatchJobEvent;

bool IsTerminal(bpnas::v1::JobState s) {
  return s == bpnas::v1::SUCCEEDED || s == bpnas::v1::FAILED || s == bpnas::v1::CANCELLED;
}

// Emits each row as a progress event; false once `emit` does.
bool EmitProgress(std::vector<Progress>* rows, const std::function<bool(const WatchJobEvent&)>& emit) {
  for (Progress& p : *rows) {
    WatchJobEvent event;
    *event.mutable_progress() = std::move(p);
    if (!emit(event)) return false;
  }
  return true;
}

bool EmitJob(Job job, const std::function<bool(const WatchJobEvent&)>& emit) {
  WatchJobEvent event;
  *event.mutable_job() = std::move(job);
  return emit(event);
}

}  // namespace

absl::Status JobWatcher::Watch(const std::string& job_id, int64_t after_step,
                               const std::function<bool(const WatchJobEvent&)>& emit,
                               const std::function<bool()>& cancelled) const {
  absl::StatusOr<Job> job = store_->GetJob(job_id);
  if (!job.ok()) return job.status();
  ProgressCursor cursor;
  cursor.step = after_step;
  if (after_step >= 0) cursor.attempt = job->attempts();
  bpnas::v1::JobState last_state = job->state();
  std::string last_phase = job->phase();
  if (!EmitJob(*std::move(job), emit)) return absl::OkStatus();

  while (!IsTerminal(last_state)) {
    if (cancelled()) return absl::CancelledError(absl::StrCat("watch of job ", job_id, " cancelled"));
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(poll_));
    absl::StatusOr<std::vector<Progress>> rows = store_->ListProgress(job_id, &cursor, 1000);
    if (rows.ok() && !EmitProgress(&*rows, emit)) return absl::OkStatus();
    absl::StatusOr<Job> now = store_->GetJob(job_id);
    if (!now.ok()) {
      // A database outage: keep watching and try again; a vanished job ends the watch.
      if (now.status().code() == absl::StatusCode::kNotFound) return now.status();
      continue;
    }
    if (now->state() == last_state && now->phase() == last_phase) continue;
    if (IsTerminal(now->state())) {
      // Rows stored between the progress query and the state change come before the end.
      absl::StatusOr<std::vector<Progress>> tail = store_->ListProgress(job_id, &cursor, 100000);
      if (tail.ok() && !EmitProgress(&*tail, emit)) return absl::OkStatus();
    }
    last_state = now->state();
    last_phase = now->phase();
    if (!EmitJob(*std::move(now), emit)) return absl::OkStatus();
  }
  return absl::OkStatus();
}

}  // namespace bpnas
