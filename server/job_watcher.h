// JobWatcher: what WatchJob streams, as a plain class over the JobStore (no gRPC): the job as it is
// now, then every progress report once, in (attempt, step) order, and the job again whenever its
// state or phase changes, until it ends.
//
//   JobWatcher watcher(store, absl::Milliseconds(250));
//   absl::Status s = watcher.Watch(job_id, /*after_step=*/-1,
//                                  [&](const WatchJobEvent& e) { return stream->Write(e); },
//                                  [&] { return ctx->IsCancelled(); });
//
// Thread-safe: Watch keeps its state on the stack, so one watcher serves any number of calls.
#ifndef BPNAS_SERVER_JOB_WATCHER_H_
#define BPNAS_SERVER_JOB_WATCHER_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "bpnas/v1/service.pb.h"
#include "server/job_store.h"

namespace bpnas {

class JobWatcher {
 public:
  // Polls `store` (which must outlive the watcher) every `poll`.
  JobWatcher(JobStore* store, absl::Duration poll) : store_(store), poll_(poll) {}

  // Calls `emit` with, in order:
  //   1. the job as it is now;
  //   2. each progress row not yet emitted: all of them when after_step < 0, else those of the
  //      job's current attempt after step `after_step` and of later attempts;
  //   3. the job whenever its state or phase has changed since it was last emitted. Rows stored
  //      before the job ended come before the final job event, which is the last call.
  // Blocks, polling the store, until the job is SUCCEEDED, FAILED or CANCELLED (returns OK at
  // once for a job that already is). Returns:
  //   OK                the job ended, or `emit` returned false (the watcher went away);
  //   CANCELLED         `cancelled` returned true (asked before each poll);
  //   NOT_FOUND         the job does not exist, or vanished while watched;
  //   the store's error for the first read. Later store errors (an outage) are not fatal: the
  //   next poll tries again.
  absl::Status Watch(const std::string& job_id, int64_t after_step,
                     const std::function<bool(const bpnas::v1::WatchJobEvent&)>& emit,
                     const std::function<bool()>& cancelled) const;

 private:
  JobStore* const store_;
  const absl::Duration poll_;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_JOB_WATCHER_H_
