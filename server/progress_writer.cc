#include "server/progress_writer.h"

#include <algorithm>

namespace bpnas {

ProgressWriter::ProgressWriter(JobStore* store, int writers, int max_batch)
    : store_(store), max_batch_(std::max(1, max_batch)) {
  for (int i = 0; i < std::max(1, writers); ++i) threads_.emplace_back([this] { Loop(); });
}

ProgressWriter::~ProgressWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  queued_.notify_all();
  for (auto& t : threads_) t.join();
}

absl::StatusOr<bool> ProgressWriter::Write(const ProgressReport& report) {
  Pending pending;
  pending.report = &report;
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("the coordinator is shutting down");
  queue_.push_back(&pending);
  queued_.notify_one();
  finished_.wait(lock, [&] { return pending.done; });
  return pending.result;
}

void ProgressWriter::Loop() {
  std::vector<Pending*> batch;
  std::vector<ProgressReport> reports;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      queued_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      batch.clear();
      while (!queue_.empty() && int(batch.size()) < max_batch_) {
        batch.push_back(queue_.front());
        queue_.pop_front();
      }
    }
    reports.clear();
    reports.reserve(batch.size());
    for (Pending* p : batch) reports.push_back(*p->report);
    absl::StatusOr<std::vector<bool>> stored = store_->AppendProgress(reports);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < batch.size(); ++i) {
        if (!stored.ok()) {
          batch[i]->result = stored.status();
        } else if (i < stored->size()) {
          batch[i]->result = (*stored)[i];
        } else {
          batch[i]->result = absl::InternalError("progress store returned too few results");
        }
        batch[i]->done = true;
      }
    }
    finished_.notify_all();
  }
}

}  // namespace bpnas
