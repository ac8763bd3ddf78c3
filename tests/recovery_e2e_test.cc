// Failures users of search services suffer most, with real processes: a PostgreSQL, a coordinator
// (bpnas-server) and workers (bpnas-worker) started by this test, driven through the `bpnas` CLI.
//   - a worker killed with SIGKILL mid-search: the job resumes from its checkpoint elsewhere;
//   - the coordinator killed and restarted mid-search: the job still succeeds, in the same attempt;
//   - PostgreSQL restarted mid-search: the coordinator reconnects, nothing is lost;
//   - cancel of a 2-rank job stops both ranks promptly;
//   - a job whose every attempt fails ends FAILED with the reason.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "bpnas/v1/service.pb.h"
#include "common/http_server.h"
#include "common/pg_cluster.h"
#include "common/subprocess.h"
#include "google/protobuf/util/json_util.h"
#include "tests/binary_test_util.h"

namespace bpnas {
namespace {

using Clock = std::chrono::steady_clock;

// SIGTERM (or `sig`), up to 10 s to exit, then SIGKILL.
void Stop(std::unique_ptr<Subprocess>* process, int sig = SIGTERM) {
  if (*process == nullptr) return;
  (*process)->Signal(sig);
  if (!(*process)->Wait(absl::Seconds(10)).ok()) (*process)->Kill();
  process->reset();
}

struct Cli {
  int exit_code = -1;
  std::string out;
};

bool WaitFor(const std::function<bool()>& done, double seconds) {
  const auto until = Clock::now() + std::chrono::milliseconds(int64_t(seconds * 1000));
  while (Clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return done();
}

class Recovery : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/bpnas-recovery-XXXXXX";
    dir_ = mkdtemp(tmpl);
    chmod(dir_.c_str(), 0755);  // PostgreSQL runs as its own user when the tests run as root
    auto pg = LocalPostgres::Start(dir_ + "/pg", PickFreePort(), /*durable=*/false);
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = std::move(*pg).release();
    http_port_ = PickFreePort();
    do {
      grpc_port_ = PickFreePort();
    } while (grpc_port_ >= http_port_ && grpc_port_ <= http_port_ + 8);
    server_address_ = "127.0.0.1:" + std::to_string(grpc_port_);
    StartServer();
  }
  static void TearDownTestSuite() {
    for (auto& w : workers_) Stop(&w);
    Stop(&server_);
    if (pg_ != nullptr) (void)pg_->Stop();
    delete pg_;
  }

  static void StartServer() {
    server_ = StartBin({Bin("bpnas-server"), "--listen", server_address_, "--db", pg_->dsn(), "--http",
                        "127.0.0.1:" + std::to_string(http_port_), "--lease_seconds", "3", "--heartbeat_ms",
                        "300", "--max_attempts", "3"},
                       dir_ + "/server.log");
    ASSERT_TRUE(WaitFor([] { return Run("list").exit_code == 0; }, 60)) << ReadFile(dir_ + "/server.log");
  }
  // Starts worker `i` (metrics on http_port_ + 1 + i).
  static void StartWorker(size_t i) {
    if (workers_.size() <= i) workers_.resize(i + 1);
    workers_[i] =
        StartBin({Bin("bpnas-worker"), "--server", server_address_, "--threads", "1", "--name",
                  "w" + std::to_string(i), "--http", "127.0.0.1:" + std::to_string(http_port_ + 1 + i),
                  "--collective_timeout_seconds", "10"},
                 dir_ + "/worker-" + std::to_string(i) + ".log");
  }
  static std::string WorkerLog(size_t i) { return ReadFile(dir_ + "/worker-" + std::to_string(i) + ".log"); }

  static Cli Run(const std::string& args) {
    Cli r;
    SubprocessOptions options;
    options.stdout_to = SubprocessOptions::Output::kCapture;
    options.stderr_to = SubprocessOptions::Output::kDiscard;
    absl::StatusOr<SubprocessResult> run =
        RunSubprocess(BinArgv("bpnas", args + " --server " + server_address_ + " --timeout 5"), options);
    if (!run.ok()) return r;
    r.exit_code = run->exit_code;
    r.out = std::move(run->stdout_text);
    return r;
  }
  static std::string Submit(const std::string& name, const std::string& json) {
    const std::string path = dir_ + "/" + name + ".json";
    std::ofstream(path) << json;
    Cli r = Run("submit " + path);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return r.out.substr(0, r.out.find('\n'));
  }
  static bpnas::v1::Job Status(const std::string& id) {
    return ParseJson<bpnas::v1::Job>(Run("status " + id + " --json").out);
  }
  static std::string Metrics() {
    auto m = HttpGet("127.0.0.1", http_port_, "/metrics", 5000);
    return m.ok() ? *m : "";
  }

  // A search of a few hundred steps on Fashion-MNIST (or synthetic data when it is missing).
  static std::string Spec(int ranks, int epochs, const std::string& dataset_extra = "") {
    const bool fmnist = std::ifstream("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").good();
    const std::string dataset =
        fmnist ? R"({"kind": "fashion-mnist", "train_limit": 4000, "test_limit": 1000)" + dataset_extra + "}"
               : R"({"kind": "synthetic", "synthetic_train": 4000, "synthetic_test": 1000)" + dataset_extra +
                     "}";
    return R"({"model": {"name": "tiny"}, "dataset": )" + dataset +
           R"(, "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 3},
              "search": {"warmup_epochs": 1, "epochs": )" +
           std::to_string(epochs) + R"(, "batch_size": 32}, "finetune": {"epochs": 1},
              "threads": 1, "seed": 4, "checkpoint_every_steps": 20, "checkpoint_every_seconds": 0, "ranks": )" +
           std::to_string(ranks) + "}";
  }

  // Workers of an earlier test are stopped, but the coordinator only learns it when their leases
  // run out (3 s): wait for that, so a new job is not gang-assigned to a worker that is gone.
  void SetUp() override {
    ASSERT_TRUE(WaitFor(
        [] {
          const std::string m = Metrics();
          return m.find("bpnas_workers{state=\"IDLE\"} 0") != std::string::npos &&
                 m.find("bpnas_workers{state=\"BUSY\"} 0") != std::string::npos;
        },
        30))
        << Metrics();
  }

  static std::string dir_, server_address_;
  static int grpc_port_, http_port_;
  static LocalPostgres* pg_;
  static std::unique_ptr<Subprocess> server_;
  static std::vector<std::unique_ptr<Subprocess>> workers_;
};
std::string Recovery::dir_, Recovery::server_address_;
int Recovery::grpc_port_ = 0, Recovery::http_port_ = 0;
LocalPostgres* Recovery::pg_ = nullptr;
std::unique_ptr<Subprocess> Recovery::server_;
std::vector<std::unique_ptr<Subprocess>> Recovery::workers_;

TEST_F(Recovery, AKilledWorkersJobResumesFromItsCheckpointAndSucceeds) {
  StartWorker(0);
  const std::string id = Submit("kill", Spec(1, 4));
  ASSERT_TRUE(WaitFor([&] { return Status(id).latest_progress().step() >= 60; }, 120)) << WorkerLog(0);
  const int64_t step_at_kill = Status(id).latest_progress().step();
  Stop(&workers_[0], SIGKILL);
  const auto killed = Clock::now();
  StartWorker(1);
  ASSERT_TRUE(
      WaitFor([&] { return Status(id).attempts() == 2 && Status(id).state() == bpnas::v1::RUNNING; }, 60));
  const double back_after = std::chrono::duration<double>(Clock::now() - killed).count();
  std::printf("[ measured ] worker SIGKILL at step %lld -> job running again after %.1f s (lease 3 s)\n",
              (long long)step_at_kill, back_after);
  ASSERT_TRUE(WaitFor([&] { return Status(id).state() == bpnas::v1::SUCCEEDED; }, 240)) << Status(id).error();
  bpnas::v1::Job job = Status(id);
  EXPECT_EQ(job.attempts(), 2u);
  EXPECT_TRUE(job.result().within_budget());
  EXPECT_LE(job.result().cost(), job.budget());
  EXPECT_NE(WorkerLog(1).find("resumes from its checkpoint at step"), std::string::npos) << WorkerLog(1);
  Stop(&workers_[1]);
}

TEST_F(Recovery, TheCoordinatorKilledAndRestartedMidSearchStillFinishesTheJob) {
  StartWorker(0);
  const std::string id = Submit("restart", Spec(1, 3));
  ASSERT_TRUE(WaitFor([&] { return Status(id).latest_progress().step() >= 20; }, 120)) << WorkerLog(0);
  Stop(&server_, SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return Status(id).state() == bpnas::v1::SUCCEEDED; }, 240)) << Status(id).error();
  EXPECT_TRUE(Status(id).result().within_budget());
  // Usually the worker trains on through the outage and the same attempt finishes. With this test's
  // 3 s lease a slow reconnect can still cost the attempt; the next one resumes from the checkpoint.
  const uint32_t attempts = Status(id).attempts();
  std::printf("[ measured ] coordinator SIGKILL + restart: job SUCCEEDED in attempt %u\n", attempts);
  EXPECT_LE(attempts, 2u) << WorkerLog(0);
  Stop(&workers_[0]);
}

TEST_F(Recovery, ThePostgresRestartedMidSearchLosesNothing) {
  const int jobs_before =
      ParseJson<bpnas::v1::ListJobsResponse>(Run("list --json --limit 1000").out).jobs_size();
  StartWorker(0);
  const std::string id = Submit("pgrestart", Spec(1, 3));
  ASSERT_TRUE(WaitFor([&] { return Status(id).latest_progress().step() >= 20; }, 120)) << WorkerLog(0);
  ASSERT_TRUE(pg_->Restart().ok());
  ASSERT_TRUE(WaitFor([&] { return Status(id).state() == bpnas::v1::SUCCEEDED; }, 240)) << Status(id).error();
  EXPECT_TRUE(Status(id).result().within_budget());
  EXPECT_EQ(ParseJson<bpnas::v1::ListJobsResponse>(Run("list --json --limit 1000").out).jobs_size(),
            jobs_before + 1);
  Stop(&workers_[0]);
}

TEST_F(Recovery, CancelOfATwoRankJobStopsBothRanksPromptly) {
  StartWorker(0);
  StartWorker(1);
  const std::string id = Submit("cancel2", Spec(2, 50));
  ASSERT_TRUE(WaitFor([&] { return Status(id).latest_progress().step() >= 10; }, 120))
      << WorkerLog(0) << WorkerLog(1);
  ASSERT_EQ(Run("cancel " + id).exit_code, 0);
  const auto cancelled = Clock::now();
  // Both workers go back to idle: they stopped their ranks.
  ASSERT_TRUE(
      WaitFor([&] { return Metrics().find("bpnas_workers{state=\"IDLE\"} 2") != std::string::npos; }, 30))
      << Metrics();
  auto stopped = [](const std::string& log) { return log.find(" stopped") != std::string::npos; };
  ASSERT_TRUE(WaitFor([&] { return stopped(WorkerLog(0)) && stopped(WorkerLog(1)); }, 30))
      << WorkerLog(0) << WorkerLog(1);
  const double s = std::chrono::duration<double>(Clock::now() - cancelled).count();
  std::printf("[ measured ] cancel of a 2-rank job: both ranks stopped within %.1f s\n", s);
  EXPECT_LT(s, 15);
  EXPECT_EQ(Status(id).state(), bpnas::v1::CANCELLED);
  Stop(&workers_[0]);
  Stop(&workers_[1]);
}

TEST_F(Recovery, AJobWhoseEveryAttemptFailsEndsFailedWithTheReason) {
  StartWorker(0);
  const std::string id = Submit("doomed", Spec(1, 1, R"(, "path": "/nonexistent/dataset")"));
  ASSERT_TRUE(WaitFor([&] { return Status(id).state() == bpnas::v1::FAILED; }, 60)) << Status(id).error();
  bpnas::v1::Job job = Status(id);
  EXPECT_EQ(job.attempts(), 3u);
  EXPECT_NE(job.error().find("gave up after 3 attempts"), std::string::npos) << job.error();
  EXPECT_NE(job.error().find("/nonexistent/dataset"), std::string::npos) << job.error();
  Stop(&workers_[0]);
}

}  // namespace
}  // namespace bpnas
