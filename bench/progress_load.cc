// bpnas-load: how many durable progress reports per second the coordinator takes, and how fast.
//
// Plays --reporters workers. The bench submits one small job per reporter, registers one worker
// per reporter and heartbeats it until the scheduler hands it an assignment, so that every
// reporter holds the attempt token of a running job, as rank 0 of a real job does. Then every
// reporter sends ReportProgress in a closed loop (one call in flight, a new one as soon as the last
// returns, no training in between) for --warmup_seconds, then for --seconds while being measured.
// A thread keeps every worker's lease alive at the heartbeat interval the server asks for, as real
// workers do, so those heartbeats are part of the load.
//
// Printed: reports/s and latency percentiles over the measured window; a durability check (every
// acknowledged report is a row of the progress table, per job, and no more); where the time went
// (CPU of the reporters, of the rest of this process and of PostgreSQL; for the in-process
// coordinator also the store's batch sizes and commit times); and, as the baseline, pgbench's
// single-row INSERT rate with as many clients against the same PostgreSQL, measured in the same
// run after the coordinator has stopped.
//
//   bpnas-load                               # private durable PostgreSQL + in-process coordinator
//   bpnas-load --db 'host=... dbname=bpnas'  # in-process coordinator on an existing database
//   bpnas-load --server HOST:PORT --db DSN   # an external bpnas-server and the database it uses
//
// Against an existing database the bench leaves its jobs behind (cancelled, with their progress
// rows; pgbench's table is dropped again); against an external server, use one with an empty
// queue: the bench refuses to report on a job it did not submit. It is a benchmark, not a test: it
// exits 0 whenever it ran, and says "TARGET MET" or "TARGET MISSED" on its last line.
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <pqxx/pqxx>
#include <sys/resource.h>
#include <sys/stat.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bpnas/v1/service.grpc.pb.h"
#include "common/pg_cluster.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "server/coordinator.h"
#include "server/pg/dsn.h"
#include "server/pg/migrations.h"
#include "server/pg/pg_job_store.h"

ABSL_FLAG(int, reporters, 64, "concurrent reporters (each one worker with one running job)");
ABSL_FLAG(int, seconds, 10, "length of the measured window");
ABSL_FLAG(int, warmup_seconds, 2, "load before the measured window (connections, caches, plans)");
ABSL_FLAG(std::string, db, "",
          "PostgreSQL connection string; empty: start a private durable PostgreSQL in a temp folder");
ABSL_FLAG(std::string, server, "",
          "HOST:PORT of a running bpnas-server (needs --db, its database); empty: an in-process "
          "coordinator on 127.0.0.1");
ABSL_FLAG(bool, pgbench, true, "also measure pgbench single-row inserts with --reporters clients");
ABSL_FLAG(bool, shared_channel, false,
          "all reporters share one gRPC channel (one TCP connection) instead of one each, as "
          "separate worker processes would have");
ABSL_FLAG(int, deadline_ms, 5000, "deadline of each ReportProgress call");
ABSL_FLAG(int, db_pool, 16, "in-process coordinator: database connections (bpnas-server --db_pool)");
ABSL_FLAG(int, progress_writers, 2,
          "in-process coordinator: threads committing progress batches (bpnas-server --progress_writers)");
ABSL_FLAG(
    int, grpc_max_pollers, 128,
    "in-process coordinator: gRPC sync server MAX_POLLERS (0: the coordinator's default). Threads beyond "
    "it exit after each call, so a low value means a thread created per blocked call");
ABSL_FLAG(bool, discard_progress, false,
          "diagnostic, in-process coordinator only: acknowledge reports without storing them, to "
          "measure gRPC and batching without the database (skips the durability check)");

namespace bpnas {
namespace {

using Clock = std::chrono::steady_clock;
using bpnas::v1::Assignment;
using bpnas::v1::HeartbeatRequest;
using bpnas::v1::HeartbeatResponse;
using bpnas::v1::JobSpec;
using bpnas::v1::Progress;
using bpnas::v1::RegisterRequest;
using bpnas::v1::RegisterResponse;
using bpnas::v1::ReportProgressRequest;
using bpnas::v1::ReportProgressResponse;
using bpnas::v1::SearchService;
using bpnas::v1::WorkerService;

// The target for durable reports at 64 reporters.
constexpr double kTargetReportsPerSecond = 5000;
constexpr double kTargetP99Ms = 50;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::chrono::system_clock::time_point DeadlineIn(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

// ---------------------------------------------------------------------------------------------
// What a reporter sends.

// A small job every scheduler accepts at once (the same spec as the service tests).
JobSpec TinySpec(int index) {
  JobSpec spec;
  spec.set_name(absl::StrCat("bpnas-load-", index));
  spec.mutable_model()->set_name("tiny");
  spec.mutable_dataset()->set_kind("synthetic");
  spec.mutable_constraint()->set_metric(bpnas::v1::BITOPS);
  spec.mutable_constraint()->set_max_relative_to_uniform_bits(4);
  return spec;
}

// A report as rank 0 of a search sends it: every field set, values that move with the step so
// the serialized size is that of a real report, not of a run of zeros.
void FillProgress(uint32_t attempt, int64_t step, double elapsed_seconds, Progress* p) {
  constexpr int64_t kEpochSteps = 390;  // CIFAR-10 at batch 128
  constexpr uint32_t kEpochs = 30;
  const double s = static_cast<double>(step);
  const double ratio = 1.4 - 0.5 * std::tanh(s / 500.0);
  const double done = std::min(1.0, s / static_cast<double>(kEpochs * kEpochSteps));
  p->set_attempt(attempt);
  p->set_step(step);
  p->set_phase("search");
  p->set_epoch(static_cast<uint32_t>((step - 1) / kEpochSteps) + 1);
  p->set_epochs(kEpochs);
  p->set_epoch_step((step - 1) % kEpochSteps + 1);
  p->set_epoch_steps(kEpochSteps);
  p->set_cross_entropy(0.3 + 2.0 / std::sqrt(s));
  p->set_barrier(0.05 / s);
  p->set_prob1(0.5 + 0.45 * std::tanh(s / 1000.0));
  p->set_prob1_lambda(1e-3);
  p->set_barrier_t(1.0 + s / 100.0);
  p->set_expected_ratio(ratio);
  p->set_argmax_ratio(ratio * 1.03);
  p->set_feasible(ratio <= 1.0);
  p->set_samples_per_second(2345.6 + std::fmod(s, 17.0));
  p->set_elapsed_seconds(elapsed_seconds);
  p->set_fraction_done(done);
  p->set_eta_seconds(done > 0 ? elapsed_seconds * (1 - done) / done : 0);
}

// ---------------------------------------------------------------------------------------------
// The in-process coordinator.

// Forwards to the real store and times AppendProgress, so that the bench can tell how much of a
// report's latency is the database (and how large the group commits are) without touching the
// server's code. With `discard_progress`, AppendProgress acknowledges without storing: the
// coordinator then costs only gRPC and batching.
class TimedStore : public JobStore {
 public:
  struct Append {
    Clock::time_point end;
    Clock::duration took;
    size_t reports;
  };

  TimedStore(JobStore* base, bool discard_progress) : base_(base), discard_progress_(discard_progress) {}

  // The AppendProgress calls that ended in [from, to).
  std::vector<Append> AppendsBetween(Clock::time_point from, Clock::time_point to) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Append> out;
    for (const Append& a : appends_)
      if (a.end >= from && a.end < to) out.push_back(a);
    return out;
  }

  absl::StatusOr<std::vector<bool>> AppendProgress(const std::vector<ProgressReport>& reports) override {
    const Clock::time_point start = Clock::now();
    absl::StatusOr<std::vector<bool>> r =
        discard_progress_ ? absl::StatusOr<std::vector<bool>>(std::vector<bool>(reports.size(), true))
                          : base_->AppendProgress(reports);
    const Clock::time_point end = Clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    appends_.push_back({end, end - start, reports.size()});
    return r;
  }

  absl::StatusOr<std::pair<bpnas::v1::Job, bool>> CreateJob(const std::string& request_id,
                                                            const JobSpec& spec, double budget) override {
    return base_->CreateJob(request_id, spec, budget);
  }
  absl::StatusOr<bpnas::v1::Job> GetJob(const std::string& job_id) override { return base_->GetJob(job_id); }
  absl::StatusOr<std::vector<bpnas::v1::Job>> ListJobs(bpnas::v1::JobState state, int limit) override {
    return base_->ListJobs(state, limit);
  }
  absl::StatusOr<std::map<bpnas::v1::JobState, int64_t>> CountJobsByState() override {
    return base_->CountJobsByState();
  }
  absl::StatusOr<bpnas::v1::Job> CancelJob(const std::string& job_id, const std::string& reason) override {
    return base_->CancelJob(job_id, reason);
  }
  absl::StatusOr<std::string> RegisterWorker(const RegisterRequest& request, absl::Duration lease) override {
    return base_->RegisterWorker(request, lease);
  }
  absl::StatusOr<HeartbeatResponse> Heartbeat(const std::string& worker_id, const std::string& attempt_token,
                                              absl::Duration lease) override {
    return base_->Heartbeat(worker_id, attempt_token, lease);
  }
  absl::StatusOr<std::map<std::string, int64_t>> CountWorkersByState() override {
    return base_->CountWorkersByState();
  }
  absl::StatusOr<int> ExpireLeases(int max_attempts) override { return base_->ExpireLeases(max_attempts); }
  absl::StatusOr<std::string> StartNextAttempt() override { return base_->StartNextAttempt(); }
  absl::Status RenewBusyWorkerLeases(absl::Duration lease) override {
    return base_->RenewBusyWorkerLeases(lease);
  }
  absl::Status PublishRendezvous(const std::string& attempt_token, const std::string& address) override {
    return base_->PublishRendezvous(attempt_token, address);
  }
  absl::StatusOr<std::vector<Progress>> ListProgress(const std::string& job_id, ProgressCursor* cursor,
                                                     int limit) override {
    return base_->ListProgress(job_id, cursor, limit);
  }
  absl::StatusOr<std::unique_ptr<BlobWriter>> BeginCheckpoint(const std::string& attempt_token,
                                                              int64_t step) override {
    return base_->BeginCheckpoint(attempt_token, step);
  }
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenLatestCheckpoint(
      const std::string& attempt_token) override {
    return base_->OpenLatestCheckpoint(attempt_token);
  }
  absl::StatusOr<std::unique_ptr<BlobWriter>> BeginArtifact(const std::string& attempt_token) override {
    return base_->BeginArtifact(attempt_token);
  }
  absl::StatusOr<bpnas::v1::JobState> CompleteAttempt(const std::string& attempt_token, bool succeeded,
                                                      const std::string& error,
                                                      const bpnas::v1::SearchResult& result,
                                                      int64_t artifact_id, int max_attempts) override {
    return base_->CompleteAttempt(attempt_token, succeeded, error, result, artifact_id, max_attempts);
  }
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenArtifact(const std::string& job_id) override {
    return base_->OpenArtifact(job_id);
  }
  absl::Status CheckReady() override { return base_->CheckReady(); }

 private:
  JobStore* base_;
  const bool discard_progress_;
  std::mutex mu_;
  std::vector<Append> appends_;
};

// bpnas-server's coordinator (server/coordinator.h) on a loopback port, over a timed store: the same
// assembly and defaults (lease, heartbeat interval, message sizes) as the real server.
class InProcessCoordinator {
 public:
  static absl::StatusOr<std::unique_ptr<InProcessCoordinator>> Start(const std::string& dsn, int db_pool,
                                                                     int progress_writers, int max_pollers,
                                                                     bool discard_progress) {
    std::unique_ptr<InProcessCoordinator> c(new InProcessCoordinator());
    BPNAS_ASSIGN_OR_RETURN(c->pg_store_, PgJobStore::Open(dsn, db_pool));
    c->store_ = std::make_unique<TimedStore>(c->pg_store_.get(), discard_progress);
    CoordinatorOptions options;
    options.listen = "127.0.0.1:0";
    // The scheduler is poked on every registration anyway; a short interval only shortens setup.
    options.manager.schedule_interval = absl::Milliseconds(50);
    options.progress_writers = progress_writers;
    if (max_pollers > 0) options.grpc_max_pollers = max_pollers;
    BPNAS_ASSIGN_OR_RETURN(c->coordinator_, Coordinator::Start(c->store_.get(), options));
    return c;
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", coordinator_->port()); }
  TimedStore* store() { return store_.get(); }

 private:
  InProcessCoordinator() = default;

  std::unique_ptr<PgJobStore> pg_store_;
  std::unique_ptr<TimedStore> store_;
  std::unique_ptr<Coordinator> coordinator_;  // destroyed first: it uses the stores
};

// ---------------------------------------------------------------------------------------------
// Setup: one running attempt per reporter.

struct Reporter {
  std::string worker_id;
  Assignment assignment;
};

// Submits `n` jobs, registers `n` workers and heartbeats them until each holds an assignment of
// one of these jobs. Fills *job_ids with what was submitted (also on error, so it can be
// cancelled), and *heartbeat_interval with what the server asks of its workers.
absl::StatusOr<std::vector<Reporter>> StartAttempts(SearchService::Stub* users, WorkerService::Stub* workers,
                                                    int n, std::set<std::string>* job_ids,
                                                    std::chrono::milliseconds* heartbeat_interval) {
  for (int i = 0; i < n; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(std::chrono::seconds(10)));
    bpnas::v1::SubmitJobRequest req;
    *req.mutable_spec() = TinySpec(i);
    bpnas::v1::SubmitJobResponse resp;
    BPNAS_RETURN_IF_ERROR(FromGrpc(users->SubmitJob(&ctx, req, &resp), "SubmitJob"));
    job_ids->insert(resp.job().id());
  }
  std::vector<Reporter> reporters(n);
  for (int i = 0; i < n; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(std::chrono::seconds(10)));
    RegisterRequest req;
    req.set_name(absl::StrCat("bpnas-load-", i));
    req.set_device(bpnas::v1::CPU);
    req.set_threads(1);
    RegisterResponse resp;
    BPNAS_RETURN_IF_ERROR(FromGrpc(workers->Register(&ctx, req, &resp), "Register"));
    reporters[i].worker_id = resp.worker_id();
    *heartbeat_interval = std::chrono::milliseconds(std::max<uint32_t>(100, resp.heartbeat_interval_ms()));
  }
  int assigned = 0;
  const Clock::time_point give_up = Clock::now() + std::chrono::seconds(30);
  while (assigned < n) {
    for (Reporter& r : reporters) {
      if (!r.assignment.attempt_token().empty()) continue;
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(std::chrono::seconds(10)));
      HeartbeatRequest req;
      req.set_worker_id(r.worker_id);
      HeartbeatResponse resp;
      BPNAS_RETURN_IF_ERROR(FromGrpc(workers->Heartbeat(&ctx, req, &resp), "Heartbeat"));
      if (resp.action() != HeartbeatResponse::RUN) continue;
      if (job_ids->count(resp.assignment().job_id()) == 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("worker ", r.worker_id, " was assigned job ", resp.assignment().job_id(),
                         ", which this bench did not submit: use a server with an empty queue"));
      }
      r.assignment = resp.assignment();
      ++assigned;
    }
    if (assigned == n) break;
    if (Clock::now() > give_up) {
      return absl::DeadlineExceededError(
          absl::StrCat("only ", assigned, " of ", n, " workers got an assignment within 30 s"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return reporters;
}

// Heartbeats every worker with its token at the server's interval, as each worker process would,
// so that no lease runs out however long the run is.
class LeaseKeeper {
 public:
  LeaseKeeper(WorkerService::Stub* workers, const std::vector<Reporter>& reporters,
              std::chrono::milliseconds interval)
      : workers_(workers), reporters_(reporters), interval_(interval), thread_([this] { Loop(); }) {}
  ~LeaseKeeper() { Stop(); }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  int64_t heartbeats() const { return heartbeats_; }
  // Heartbeats that failed or did not answer RUN (the worker lost its attempt).
  int64_t failures() const { return failures_; }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!wake_.wait_for(lock, interval_, [this] { return stopping_; })) {
      lock.unlock();
      for (const Reporter& r : reporters_) {
        grpc::ClientContext ctx;
        ctx.set_deadline(DeadlineIn(std::chrono::seconds(5)));
        HeartbeatRequest req;
        req.set_worker_id(r.worker_id);
        req.set_attempt_token(r.assignment.attempt_token());
        HeartbeatResponse resp;
        grpc::Status s = workers_->Heartbeat(&ctx, req, &resp);
        ++heartbeats_;
        if (!s.ok() || resp.action() != HeartbeatResponse::RUN) ++failures_;
      }
      lock.lock();
    }
  }

  WorkerService::Stub* workers_;
  const std::vector<Reporter>& reporters_;
  const std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<int64_t> heartbeats_{0};
  std::atomic<int64_t> failures_{0};
  std::thread thread_;  // last: starts once everything above is set
};

// ---------------------------------------------------------------------------------------------
// The load.

struct Window {
  Clock::time_point start;         // reporters start sending
  Clock::time_point measure_from;  // end of warm-up
  Clock::time_point measure_to;    // reporters stop starting calls
};

struct ReporterOutcome {
  std::vector<Clock::duration> latencies;  // OK calls that completed inside the measured window
  int64_t acknowledged = 0;                // OK and still running (stored), over the whole run
  int64_t errors = 0;                      // failed calls, over the whole run
  std::string first_error;
  bool told_to_stop = false;  // the server said the attempt ended
  double window_cpu_s = 0;    // this thread's CPU time inside the measured window
};

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

void RunReporter(WorkerService::Stub* stub, const Assignment& a, const Window& w,
                 std::chrono::milliseconds deadline, ReporterOutcome* out) {
  ReportProgressRequest req;
  req.set_attempt_token(a.attempt_token());
  req.set_job_id(a.job_id());
  std::this_thread::sleep_until(w.start);
  double cpu_at_window = -1;
  for (int64_t step = 1;; ++step) {
    const Clock::time_point sent = Clock::now();
    if (sent >= w.measure_to) break;
    if (cpu_at_window < 0 && sent >= w.measure_from) cpu_at_window = ThreadCpuSeconds();
    FillProgress(a.attempt(), step, Seconds(sent - w.start), req.mutable_progress());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    ReportProgressResponse resp;
    grpc::Status s = stub->ReportProgress(&ctx, req, &resp);
    const Clock::time_point done = Clock::now();
    if (!s.ok()) {
      // Not retried: the next call carries the next step, so a report whose fate is unknown (a
      // deadline that expired after the commit) stays one row at most.
      if (out->errors++ == 0) out->first_error = absl::StrCat(s.error_code(), ": ", s.error_message());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    if (resp.stop()) {
      out->told_to_stop = true;
      break;
    }
    ++out->acknowledged;
    if (done >= w.measure_from && done < w.measure_to) out->latencies.push_back(done - sent);
  }
  if (cpu_at_window >= 0) out->window_cpu_s = ThreadCpuSeconds() - cpu_at_window;
}

// ---------------------------------------------------------------------------------------------
// Where the CPU went.

double ProcessCpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// CPU seconds the whole machine spent busy (every process, kernel and interrupts included), from
// /proc/stat; 0 where it cannot be read. Tells a saturated machine from an idle one waiting on I/O.
double MachineBusySeconds() {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  int64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  if (!(stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) || cpu != "cpu")
    return 0;
  return static_cast<double>(user + nice + system + irq + softirq + steal) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

// PIDs of the database's server processes (backends and background processes), if the database
// runs on this machine; empty otherwise.
std::vector<int> PostgresPids(const std::string& dsn) {
  std::vector<int> pids;
  try {
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    for (const pqxx::row& row : tx.exec("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")) {
      const int pid = row[0].as<int>();
      // The same PID on this machine is only the database's if it is a PostgreSQL process.
      std::ifstream comm(absl::StrCat("/proc/", pid, "/comm"));
      std::string name;
      if (comm && std::getline(comm, name) && name.rfind("postgres", 0) == 0) pids.push_back(pid);
    }
  } catch (const std::exception&) {
    pids.clear();
  }
  return pids;
}

// utime + stime of `pid` in seconds, or 0 if it is gone.
double PidCpuSeconds(int pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!stat || !std::getline(stat, line)) return 0;
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(line.substr(close + 2), ' ');
  // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name and state.
  int64_t utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) || !absl::SimpleAtoi(fields[12], &stime))
    return 0;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SumCpuSeconds(const std::vector<int>& pids) {
  double sum = 0;
  for (int pid : pids) sum += PidCpuSeconds(pid);
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Durability: every acknowledged report is one row.

// Rows of the progress table per job, for `job_ids`.
absl::StatusOr<std::map<std::string, int64_t>> CountProgressRows(const std::string& dsn,
                                                                 const std::set<std::string>& job_ids) {
  std::map<std::string, int64_t> rows;
  try {
    pqxx::connection conn(dsn);
    pqxx::read_transaction tx(conn);
    std::vector<std::string> quoted;
    for (const std::string& id : job_ids) quoted.push_back(tx.quote(id));
    pqxx::result r = tx.exec(absl::StrCat("SELECT job_id, count(*) FROM progress WHERE job_id IN (",
                                          absl::StrJoin(quoted, ", "), ") GROUP BY job_id"));
    for (const pqxx::row& row : r) rows[row[0].as<std::string>()] = row[1].as<int64_t>();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("counting progress rows: ", e.what()));
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// The baseline: pgbench.

// Runs `argv` (argv[0] looked up in PATH) and returns its exit status and everything it printed.
absl::StatusOr<std::pair<int, std::string>> RunAndCapture(const std::vector<std::string>& argv) {
  SubprocessOptions options;
  options.stdout_to = SubprocessOptions::Output::kCapture;
  options.stderr_to = SubprocessOptions::Output::kStdout;
  absl::StatusOr<SubprocessResult> run = RunSubprocess(argv, options);
  if (!run.ok()) {
    if (run.status().code() != absl::StatusCode::kFailedPrecondition) return run.status();
    return absl::FailedPreconditionError(
        absl::StrCat(run.status().message(), " (install postgresql-client)"));
  }
  return std::make_pair(run->exit_code, std::move(run->stdout_text));
}

// The number after `key` in pgbench's report ("tps = 1234.5 (...)"), or -1.
double PgbenchNumber(const std::string& output, const std::string& key) {
  const size_t at = output.find(key);
  if (at == std::string::npos) return -1;
  return std::strtod(output.c_str() + at + key.size(), nullptr);
}

struct PgbenchResult {
  double inserts_per_second = 0;
  double latency_average_ms = 0;
};

// `clients` pgbench clients each inserting one row of `payload_bytes` per transaction into a
// table of its own, for `seconds`: the rate at which this PostgreSQL commits single-row inserts.
absl::StatusOr<PgbenchResult> RunPgbench(const std::string& dsn, const std::string& work_dir, int clients,
                                         int seconds, size_t payload_bytes) {
  constexpr char kTable[] = "bpnas_load_pgbench_rows";
  try {
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP TABLE IF EXISTS ", kTable));
    tx.exec(absl::StrCat("CREATE TABLE ", kTable,
                         " (id bigserial PRIMARY KEY, v bigint NOT NULL, payload bytea)"));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("creating ", kTable, ": ", e.what()));
  }
  const std::string script = work_dir + "/pgbench_insert.sql";
  {
    std::ofstream out(script, std::ios::trunc);
    out << "\\set v random(1, 1000000000)\n"
        << "INSERT INTO " << kTable << " (v, payload) VALUES (:v, decode(repeat('a5', " << payload_bytes
        << "), 'hex'));\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", script));
  }
  // pgbench takes a connection string where the database name goes.
  BPNAS_ASSIGN_OR_RETURN(auto run, RunAndCapture({"pgbench", "-n", "-c", std::to_string(clients), "-j",
                                                  std::to_string(std::min(2, clients)), "-T",
                                                  std::to_string(seconds), "-f", script, dsn}));
  try {
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP TABLE IF EXISTS ", kTable));
  } catch (const std::exception&) {
    // Leaving the table behind is harmless; the result stands.
  }
  PgbenchResult result;
  result.inserts_per_second = PgbenchNumber(run.second, "tps = ");
  result.latency_average_ms = PgbenchNumber(run.second, "latency average = ");
  if (run.first != 0 || result.inserts_per_second < 0) {
    return absl::InternalError(absl::StrCat("pgbench exited with ", run.first, ":\n", run.second));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------

// A fresh folder under TMPDIR (or /tmp), deleted with everything in it on destruction.
class TempDir {
 public:
  static absl::StatusOr<std::unique_ptr<TempDir>> Create() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/bpnas-load-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr)
      return absl::InternalError(absl::StrCat("mkdtemp ", pattern, " failed"));
    // mkdtemp makes it 0700; PostgreSQL runs as the postgres user when we are root and must be
    // able to reach the cluster folder inside.
    if (chmod(pattern.c_str(), 0755) != 0)
      return absl::InternalError(absl::StrCat("chmod ", pattern, " failed"));
    return std::unique_ptr<TempDir>(new TempDir(pattern));
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

double PercentileMs(const std::vector<Clock::duration>& sorted, double q) {
  if (sorted.empty()) return 0;
  // Nearest rank.
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return Millis(sorted[rank - 1]);
}

struct Options {
  int reporters;
  int seconds;
  int warmup_seconds;
  std::string db;
  std::string server;
  bool pgbench;
  bool shared_channel;
  std::chrono::milliseconds deadline;
  int db_pool;
  int progress_writers;
  int grpc_max_pollers;
  bool discard_progress;
};

absl::Status RunBench(const Options& o) {
  BPNAS_ASSIGN_OR_RETURN(std::unique_ptr<TempDir> temp, TempDir::Create());

  // The database.
  std::unique_ptr<LocalPostgres> postgres;
  std::string dsn = o.db;
  if (dsn.empty()) {
    BPNAS_ASSIGN_OR_RETURN(postgres, LocalPostgres::Start(temp->path() + "/postgres", PickFreePort(),
                                                          /*durable=*/true));
    dsn = postgres->dsn();
  }

  // The coordinator.
  std::unique_ptr<InProcessCoordinator> coordinator;
  std::string target = o.server;
  if (target.empty()) {
    BPNAS_RETURN_IF_ERROR(ApplyMigrations(dsn));
    BPNAS_ASSIGN_OR_RETURN(coordinator, InProcessCoordinator::Start(dsn, o.db_pool, o.progress_writers,
                                                                    o.grpc_max_pollers, o.discard_progress));
    target = coordinator->address();
  }
  std::cout << "bpnas-load: " << o.reporters << " reporters ("
            << (o.shared_channel ? "one shared gRPC channel" : "one gRPC channel each") << "), " << o.seconds
            << " s measured after " << o.warmup_seconds << " s warm-up\n"
            << "  coordinator: "
            << (coordinator ? absl::StrCat("in-process on ", target, " (db_pool ", o.db_pool,
                                           ", progress_writers ", o.progress_writers,
                                           o.grpc_max_pollers > 0
                                               ? absl::StrCat(", grpc_max_pollers ", o.grpc_max_pollers)
                                               : "",
                                           o.discard_progress ? ", DISCARDING progress" : "", ")")
                            : absl::StrCat("external at ", target))
            << "\n  database: "
            << (postgres ? "private PostgreSQL, durable (fsync and synchronous_commit on)" : RedactedDsn(dsn))
            << "\n  machine: " << std::thread::hardware_concurrency() << " CPU cores\n"
            << std::flush;

  // One running attempt per reporter.
  auto setup_channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto users = SearchService::NewStub(setup_channel);
  auto workers = WorkerService::NewStub(setup_channel);
  std::set<std::string> job_ids;
  std::chrono::milliseconds heartbeat_interval(1000);
  absl::StatusOr<std::vector<Reporter>> started =
      StartAttempts(users.get(), workers.get(), o.reporters, &job_ids, &heartbeat_interval);
  auto cancel_jobs = [&] {
    for (const std::string& id : job_ids) {
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(std::chrono::seconds(10)));
      bpnas::v1::CancelJobRequest req;
      req.set_job_id(id);
      bpnas::v1::Job job;
      users->CancelJob(&ctx, req, &job);  // best effort: a job left running is only re-queued
    }
  };
  if (!started.ok()) {
    cancel_jobs();
    return started.status();
  }
  const std::vector<Reporter>& reporters = *started;

  // The reporters' channels. Separate channels share one TCP connection unless told not to, and
  // separate worker processes would each have their own.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < (o.shared_channel ? 1 : o.reporters); ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
    if (!channels.back()->WaitForConnected(DeadlineIn(std::chrono::seconds(10)))) {
      cancel_jobs();
      return absl::UnavailableError(absl::StrCat("cannot connect to ", target));
    }
  }
  std::vector<std::unique_ptr<WorkerService::Stub>> stubs;
  for (const auto& channel : channels) stubs.push_back(WorkerService::NewStub(channel));

  // The run.
  LeaseKeeper leases(workers.get(), reporters, heartbeat_interval);
  Window w;
  w.start = Clock::now() + std::chrono::milliseconds(100);  // every thread is waiting by then
  w.measure_from = w.start + std::chrono::seconds(o.warmup_seconds);
  w.measure_to = w.measure_from + std::chrono::seconds(o.seconds);
  std::vector<ReporterOutcome> outcomes(o.reporters);
  std::vector<std::thread> threads;
  for (int i = 0; i < o.reporters; ++i) {
    WorkerService::Stub* stub = stubs[o.shared_channel ? 0 : i].get();
    threads.emplace_back(RunReporter, stub, std::cref(reporters[i].assignment), std::cref(w), o.deadline,
                         &outcomes[i]);
  }
  std::this_thread::sleep_until(w.measure_from);
  const std::vector<int> pg_pids = PostgresPids(dsn);
  const double pg_cpu_before = SumCpuSeconds(pg_pids);
  const double process_cpu_before = ProcessCpuSeconds();
  const double machine_busy_before = MachineBusySeconds();
  std::this_thread::sleep_until(w.measure_to);
  const double machine_busy = MachineBusySeconds() - machine_busy_before;
  const double pg_cpu = SumCpuSeconds(pg_pids) - pg_cpu_before;
  const double process_cpu = ProcessCpuSeconds() - process_cpu_before;
  for (std::thread& t : threads) t.join();
  leases.Stop();

  // Results.
  std::vector<Clock::duration> latencies;
  int64_t acknowledged = 0, errors = 0;
  int stopped = 0;
  double reporters_cpu = 0;
  std::string first_error;
  for (const ReporterOutcome& out : outcomes) {
    latencies.insert(latencies.end(), out.latencies.begin(), out.latencies.end());
    acknowledged += out.acknowledged;
    errors += out.errors;
    stopped += out.told_to_stop ? 1 : 0;
    reporters_cpu += out.window_cpu_s;
    if (first_error.empty()) first_error = out.first_error;
  }
  std::sort(latencies.begin(), latencies.end());
  const double rate = static_cast<double>(latencies.size()) / o.seconds;
  const double p99 = PercentileMs(latencies, 0.99);
  std::cout << absl::StrFormat(
      "progress reports: reporters %d  seconds %d  reports/s %.0f  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  "
      "max %.2f ms  errors %d\n",
      o.reporters, o.seconds, rate, PercentileMs(latencies, 0.50), PercentileMs(latencies, 0.90), p99,
      latencies.empty() ? 0.0 : Millis(latencies.back()), errors);
  if (errors > 0) std::cout << "  first error: " << first_error << "\n";
  if (stopped > 0) std::cout << "  " << stopped << " reporters were told to stop (their attempt ended)\n";
  std::cout << "  heartbeats: " << leases.heartbeats() << " sent, " << leases.failures()
            << " failed or not RUN\n";

  // Where the time went.
  const double window = static_cast<double>(o.seconds);
  std::cout << absl::StrFormat(
      "  CPU in the window (cores busy): reporters %.2f, rest of this process %.2f%s", reporters_cpu / window,
      (process_cpu - reporters_cpu) / window, coordinator ? " (coordinator, gRPC)" : " (gRPC)");
  if (!pg_pids.empty()) std::cout << absl::StrFormat(", PostgreSQL %.2f", pg_cpu / window);
  // The rest of the machine's busy time is the kernel's own threads and other processes: a large
  // value means the numbers above were measured on a shared machine.
  std::cout << absl::StrFormat("; whole machine %.2f of %d (%.2f outside this process%s)\n",
                               machine_busy / window, std::thread::hardware_concurrency(),
                               (machine_busy - process_cpu - (pg_pids.empty() ? 0 : pg_cpu)) / window,
                               pg_pids.empty() ? "" : " and PostgreSQL");
  if (coordinator) {
    std::vector<TimedStore::Append> appends =
        coordinator->store()->AppendsBetween(w.measure_from, w.measure_to);
    if (!appends.empty()) {
      std::vector<Clock::duration> took;
      size_t reports = 0;
      Clock::duration busy{};
      for (const auto& a : appends) {
        took.push_back(a.took);
        reports += a.reports;
        busy += a.took;
      }
      std::sort(took.begin(), took.end());
      std::cout << absl::StrFormat(
          "  store: %d AppendProgress commits/s, %.1f reports per commit, commit p50 %.2f ms p99 %.2f ms, "
          "writers busy %.0f%%\n",
          static_cast<int64_t>(static_cast<double>(appends.size()) / window),
          static_cast<double>(reports) / static_cast<double>(appends.size()), PercentileMs(took, 0.5),
          PercentileMs(took, 0.99), 100.0 * Seconds(busy) / (window * o.progress_writers));
    }
  }

  // Durability.
  if (!o.discard_progress) {
    // Per job: reports acknowledged, and failed calls (which may or may not have committed; a
    // failed step is never sent again, so it is one row at most).
    std::map<std::string, std::pair<int64_t, int64_t>> sent_by_job;
    for (int i = 0; i < o.reporters; ++i) {
      auto& [acked, failed] = sent_by_job[reporters[i].assignment.job_id()];
      acked += outcomes[i].acknowledged;
      failed += outcomes[i].errors;
    }
    absl::StatusOr<std::map<std::string, int64_t>> rows = CountProgressRows(dsn, job_ids);
    if (!rows.ok()) {
      std::cout << "durability: cannot check: " << StatusToString(rows.status()) << "\n";
    } else {
      int64_t total_rows = 0;
      int mismatched = 0;
      for (const auto& [job, sent] : sent_by_job) {
        const auto it = rows->find(job);
        const int64_t stored = it == rows->end() ? 0 : it->second;
        total_rows += stored;
        if (stored < sent.first || stored > sent.first + sent.second) ++mismatched;
      }
      const bool ok = mismatched == 0;
      std::cout << "durability: " << total_rows << " progress rows for " << acknowledged
                << " acknowledged reports (warm-up included): "
                << (ok ? "OK, every acknowledged report stored once"
                       : absl::StrCat("MISMATCH in ", mismatched, " of ", sent_by_job.size(), " jobs"))
                << "\n";
    }
  }
  cancel_jobs();
  // pgbench gets the machine to itself.
  coordinator.reset();

  if (o.pgbench) {
    Progress sample;
    FillProgress(1, 1000, 60.0, &sample);
    absl::StatusOr<PgbenchResult> pg =
        RunPgbench(dsn, temp->path(), o.reporters, o.seconds, sample.ByteSizeLong());
    if (!pg.ok()) {
      std::cout << "pgbench: " << StatusToString(pg.status()) << "\n";
    } else {
      std::cout << absl::StrFormat(
          "pgbench single-row inserts/s (%d clients): %.0f  (one %d-byte row per transaction, latency "
          "average "
          "%.2f ms)\n",
          o.reporters, pg->inserts_per_second, sample.ByteSizeLong(), pg->latency_average_ms);
      std::cout << absl::StrFormat("ratio reports/s / pgbench inserts/s: %.2f\n",
                                   rate / pg->inserts_per_second);
    }
  }

  if (postgres) BPNAS_RETURN_IF_ERROR(postgres->Stop());
  const bool met = rate >= kTargetReportsPerSecond && p99 < kTargetP99Ms && errors == 0;
  std::cout << absl::StrFormat(
      "%s (target: >= %.0f reports/s with p99 < %.0f ms and no errors; got %.0f reports/s, p99 %.2f ms)\n",
      met ? "TARGET MET" : "TARGET MISSED", kTargetReportsPerSecond, kTargetP99Ms, rate, p99);
  return absl::OkStatus();
}

}  // namespace
}  // namespace bpnas

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "load generator for the coordinator's progress path: N reporters sending ReportProgress in a closed "
      "loop, with pgbench single-row inserts as the baseline.\n"
      "  bpnas-load [--reporters 64] [--seconds 10] [--db DSN] [--server HOST:PORT] [--pgbench=false]");
  // --help lists the flags of files named like the program by default; ours live in this file.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) { return absl::EndsWith(file, "progress_load.cc"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  bpnas::Options o;
  o.reporters = absl::GetFlag(FLAGS_reporters);
  o.seconds = absl::GetFlag(FLAGS_seconds);
  o.warmup_seconds = absl::GetFlag(FLAGS_warmup_seconds);
  o.db = absl::GetFlag(FLAGS_db);
  o.server = absl::GetFlag(FLAGS_server);
  o.pgbench = absl::GetFlag(FLAGS_pgbench);
  o.shared_channel = absl::GetFlag(FLAGS_shared_channel);
  o.deadline = std::chrono::milliseconds(absl::GetFlag(FLAGS_deadline_ms));
  o.db_pool = absl::GetFlag(FLAGS_db_pool);
  o.progress_writers = absl::GetFlag(FLAGS_progress_writers);
  o.grpc_max_pollers = absl::GetFlag(FLAGS_grpc_max_pollers);
  o.discard_progress = absl::GetFlag(FLAGS_discard_progress);
  if (o.reporters < 1 || o.seconds < 1 || o.warmup_seconds < 0 || o.deadline.count() < 1 || o.db_pool < 1 ||
      o.progress_writers < 1) {
    std::cerr
        << "bpnas-load: --reporters, --seconds, --deadline_ms, --db_pool and --progress_writers must be "
           "positive, --warmup_seconds not negative\n";
    return 2;
  }
  if (!o.server.empty() && o.db.empty()) {
    std::cerr
        << "bpnas-load: --server needs --db (the server's database) for the durability check and pgbench\n";
    return 2;
  }
  if (!o.server.empty() && o.discard_progress) {
    std::cerr << "bpnas-load: --discard_progress needs the in-process coordinator (no --server)\n";
    return 2;
  }
  absl::Status s = bpnas::RunBench(o);
  if (!s.ok()) {
    std::cerr << "bpnas-load: " << bpnas::StatusToString(s) << "\n";
    return 1;
  }
  return 0;
}
