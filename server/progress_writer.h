// ProgressWriter: group commit for progress reports.
//
// ReportProgress is the coordinator's hot write path: every running job's rank 0 reports every few
// steps, and each report must be durable (committed) before the call returns. One transaction per
// report would cap throughput at the database's commit rate; instead concurrent Write() calls are
// queued and `writers` background threads each take everything queued (up to max_batch) and store
// it with one JobStore::AppendProgress call, i.e. one commit for the whole batch. A lone report
// still commits at once (no timer), so latency under low load is one commit.
//
// Thread-safe. The destructor stores what is queued, then stops the threads.
#ifndef BPNAS_SERVER_PROGRESS_WRITER_H_
#define BPNAS_SERVER_PROGRESS_WRITER_H_

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "server/job_store.h"

namespace bpnas {

class ProgressWriter {
 public:
  ProgressWriter(JobStore* store, int writers = 2, int max_batch = 512);
  ~ProgressWriter();
  ProgressWriter(const ProgressWriter&) = delete;
  ProgressWriter& operator=(const ProgressWriter&) = delete;

  // Blocks until the report is committed (or refused). Returns whether its attempt is still
  // running (false: the token is stale, the rank must stop), or the store's error for the batch.
  absl::StatusOr<bool> Write(const ProgressReport& report);

 private:
  struct Pending {
    const ProgressReport* report;
    bool done = false;
    absl::StatusOr<bool> result = false;
  };
  void Loop();

  JobStore* store_;
  const int max_batch_;
  std::mutex mu_;
  std::condition_variable queued_;
  std::condition_variable finished_;
  std::deque<Pending*> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_PROGRESS_WRITER_H_
