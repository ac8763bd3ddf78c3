// End-to-end through the service: `bpnas up` (a private PostgreSQL, the coordinator and a local
// worker, all real processes on loopback), then the CLI: submit, wait, fetch, eval, cancel, and a
// restart of the whole cluster that must keep every job.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "bpnas/v1/service.pb.h"
#include "common/http_server.h"
#include "common/pg_cluster.h"
#include "common/sha256.h"
#include "common/subprocess.h"
#include "google/protobuf/util/json_util.h"
#include "tests/binary_test_util.h"

namespace bpnas {
namespace {

struct TimedCliRun {
  int exit_code = -1;
  std::string out;  // stdout
  std::string all;  // stdout + stderr
  double seconds = 0;
};

TimedCliRun RunCli(const std::string& args) {
  SubprocessOptions options;
  options.stdout_to = SubprocessOptions::Output::kCapture;
  options.stderr_to = SubprocessOptions::Output::kCapture;
  TimedCliRun r;
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<SubprocessResult> run = RunSubprocess(BinArgv("bpnas", args), options);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!run.ok()) {
    r.all = run.status().ToString();
    return r;
  }
  r.exit_code = run->exit_code;
  r.out = run->stdout_text;
  r.all = run->stdout_text + run->stderr_text;
  return r;
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// A search that takes a few seconds: the tiny model on synthetic data.
std::string TinySpec(int epochs) {
  return std::string(R"({"name": "e2e-tiny", "model": {"name": "tiny"},
    "dataset": {"kind": "synthetic", "synthetic_train": 1200, "synthetic_test": 300},
    "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4},
    "search": {"warmup_epochs": 1, "epochs": )") +
         std::to_string(epochs) + R"(, "batch_size": 64}, "finetune": {"epochs": 1}, "threads": 1, "seed": 3,
    "checkpoint_every_seconds": 1})";
}

class Cluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/bpnas-e2e-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    chmod(dir.c_str(), 0755);  // PostgreSQL runs as its own user when the tests run as root
    state_ = dir + "/state";
    // Workers serve /metrics on the ports after the coordinator's HTTP port: keep gRPC clear of them.
    http_port_ = PickFreePort();
    do {
      grpc_port_ = PickFreePort();
    } while (grpc_port_ >= http_port_ && grpc_port_ <= http_port_ + 4);
    server_ = "127.0.0.1:" + std::to_string(grpc_port_);
    StartUp();
  }
  static void TearDownTestSuite() { StopUp(); }

  static void StartUp() {
    up_ = StartBin({Bin("bpnas"), "up", "--workers", "1", "--threads", "1", "--state", state_, "--listen",
                    server_, "--http", "127.0.0.1:" + std::to_string(http_port_)},
                   state_ + ".up.log");
    ASSERT_NE(up_, nullptr);
    // Ready when the coordinator answers.
    for (int i = 0; i < 120; ++i) {
      if (RunCli("list --server " + server_ + " --timeout 1").exit_code == 0) return;
      if (up_->Poll().has_value()) {
        up_.reset();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    FAIL() << "bpnas up did not come up; its log:\n" << ReadFile(state_ + ".up.log");
  }
  static void StopUp() {
    if (up_ == nullptr) return;
    up_->Signal(SIGINT);
    if (!up_->Wait(absl::Seconds(30)).ok()) {
      up_->Kill();
      ADD_FAILURE() << "bpnas up did not stop within 30 s of Ctrl-C";
    }
    up_.reset();
  }

  static bpnas::v1::Job Status(const std::string& id) {
    TimedCliRun r = RunCli("status " + id + " --json --server " + server_);
    EXPECT_EQ(r.exit_code, 0) << r.all;
    return ParseJson<bpnas::v1::Job>(r.out);
  }

  static std::string state_, server_;
  static int grpc_port_, http_port_;
  static std::unique_ptr<Subprocess> up_;
};
std::string Cluster::state_, Cluster::server_;
int Cluster::grpc_port_ = 0, Cluster::http_port_ = 0;
std::unique_ptr<Subprocess> Cluster::up_;

TEST_F(Cluster, SubmitWaitFetchEvalGivesTheSameModelAndAccuracy) {
  const std::string spec = WriteFile("e2e_tiny.json", TinySpec(2));
  TimedCliRun sub = RunCli("submit " + spec + " --wait --server " + server_);
  ASSERT_EQ(sub.exit_code, 0) << sub.all;
  const std::string id = sub.out.substr(0, sub.out.find('\n'));
  ASSERT_EQ(id.rfind("j-", 0), 0u) << sub.out;

  bpnas::v1::Job job = Status(id);
  ASSERT_EQ(job.state(), bpnas::v1::SUCCEEDED) << job.error();
  EXPECT_TRUE(job.result().within_budget());
  EXPECT_LE(job.result().cost(), job.budget());
  EXPECT_GT(job.artifact_bytes(), 0);
  EXPECT_TRUE(job.has_latest_progress()) << "progress reports reached the store";
  // The human status names the check's outcome whenever the check ran (on by default).
  TimedCliRun human = RunCli("status " + id + " --server " + server_);
  ASSERT_EQ(human.exit_code, 0) << human.all;
  EXPECT_NE(human.out.find("result: test accuracy"), std::string::npos) << human.out;
  EXPECT_EQ(human.out.find("uniform check: ") != std::string::npos, job.result().check_uniform_bits() > 0)
      << human.out;

  const std::string model = ::testing::TempDir() + "/e2e.bpq";
  TimedCliRun fetch = RunCli("fetch " + id + " -o " + model + " --server " + server_);
  ASSERT_EQ(fetch.exit_code, 0) << fetch.all;
  const std::string bytes = ReadFile(model);
  EXPECT_EQ(int64_t(bytes.size()), job.artifact_bytes());
  EXPECT_EQ(Sha256Hex(bytes), job.artifact_sha256());

  // --onnx alone writes the ONNX export of the same model: the bytes `bpnas export` writes.
  const std::string fetched_onnx = ::testing::TempDir() + "/e2e_fetched.onnx";
  const std::string exported_onnx = ::testing::TempDir() + "/e2e_exported.onnx";
  TimedCliRun fetch_onnx = RunCli("fetch " + id + " --onnx " + fetched_onnx + " --server " + server_);
  ASSERT_EQ(fetch_onnx.exit_code, 0) << fetch_onnx.all;
  TimedCliRun exported = RunCli("export " + model + " -o " + exported_onnx);
  ASSERT_EQ(exported.exit_code, 0) << exported.all;
  EXPECT_FALSE(ReadFile(fetched_onnx).empty());
  EXPECT_TRUE(ReadFile(fetched_onnx) == ReadFile(exported_onnx));
  TimedCliRun neither = RunCli("fetch " + id + " --server " + server_);
  EXPECT_EQ(neither.exit_code, 2) << neither.all;

  // The artifact alone reproduces the accuracy the worker measured.
  TimedCliRun eval = RunCli("eval " + model + " --json");
  ASSERT_EQ(eval.exit_code, 0) << eval.all;
  const auto at = eval.out.find("\"test_accuracy\": ");
  ASSERT_NE(at, std::string::npos) << eval.out;
  EXPECT_NEAR(std::atof(eval.out.c_str() + at + 17), job.result().test_accuracy(), 1e-3) << eval.out;
}

TEST_F(Cluster, CancelStopsTheRunningSearchAndFreesTheWorker) {
  const std::string slow = WriteFile("e2e_slow.json", TinySpec(200));
  TimedCliRun sub = RunCli("submit " + slow + " --server " + server_);
  ASSERT_EQ(sub.exit_code, 0) << sub.all;
  const std::string id = sub.out.substr(0, sub.out.find('\n'));
  // Wait until it is training.
  bpnas::v1::Job job;
  for (int i = 0; i < 120; ++i) {
    job = Status(id);
    if (job.state() == bpnas::v1::RUNNING && job.has_latest_progress()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_EQ(job.state(), bpnas::v1::RUNNING);
  // The worker uploads a checkpoint every second (checkpoint_every_seconds: 1) and says so in /metrics.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto worker_metrics = HttpGet("127.0.0.1", http_port_ + 1, "/metrics", 5000);
  ASSERT_TRUE(worker_metrics.ok()) << worker_metrics.status();
  EXPECT_NE(worker_metrics->find("bpnas_worker_busy 1"), std::string::npos) << *worker_metrics;
  EXPECT_EQ(worker_metrics->find("bpnas_worker_checkpoints_total{result=\"stored\"} 0"), std::string::npos)
      << *worker_metrics;
  EXPECT_NE(worker_metrics->find("bpnas_worker_checkpoints_total{result=\"stored\"}"), std::string::npos)
      << *worker_metrics;
  TimedCliRun cancel = RunCli("cancel " + id + " --json --server " + server_);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.all;
  EXPECT_EQ(ParseJson<bpnas::v1::Job>(cancel.out).state(), bpnas::v1::CANCELLED);

  // The worker stops the search and takes the next job: a short one finishes soon after.
  const auto t0 = std::chrono::steady_clock::now();
  const std::string quick = WriteFile("e2e_quick.json", TinySpec(1));
  TimedCliRun next = RunCli("submit " + quick + " --wait --server " + server_);
  ASSERT_EQ(next.exit_code, 0) << next.all;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 90) << "the cancelled search held the worker";
  EXPECT_EQ(Status(id).state(), bpnas::v1::CANCELLED);
}

TEST_F(Cluster, BadSpecIsRefusedNamingTheFieldAndStoresNothing) {
  TimedCliRun before = RunCli("list --json --limit 1000 --server " + server_);
  ASSERT_EQ(before.exit_code, 0) << before.all;
  const int n = ParseJson<bpnas::v1::ListJobsResponse>(before.out).jobs_size();
  const std::string bad = WriteFile("e2e_bad.json", R"({"model": {"name": "tiny"},
    "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4}, "search": {"arch_lr": -1}})");
  TimedCliRun r = RunCli("submit " + bad + " --server " + server_);
  EXPECT_EQ(r.exit_code, 2) << r.all;
  EXPECT_NE(r.all.find("search.arch_lr"), std::string::npos) << r.all;
  TimedCliRun after = RunCli("list --json --limit 1000 --server " + server_);
  EXPECT_EQ(ParseJson<bpnas::v1::ListJobsResponse>(after.out).jobs_size(), n);
}

TEST_F(Cluster, UnreachableServerIsAOneLineErrorNotAHang) {
  TimedCliRun r = RunCli("list --server 127.0.0.1:1 --timeout 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_LT(r.seconds, 10);
  EXPECT_NE(r.all.find("cannot reach the coordinator at 127.0.0.1:1"), std::string::npos) << r.all;
}

// Last: stop everything, start again on the same state folder; the jobs are still there.
TEST_F(Cluster, RestartOnTheSameStateKeepsEveryJob) {
  TimedCliRun before = RunCli("list --json --limit 1000 --server " + server_);
  ASSERT_EQ(before.exit_code, 0) << before.all;
  auto jobs_before = ParseJson<bpnas::v1::ListJobsResponse>(before.out);
  ASSERT_GT(jobs_before.jobs_size(), 0);
  StopUp();
  StartUp();
  TimedCliRun after = RunCli("list --json --limit 1000 --server " + server_);
  ASSERT_EQ(after.exit_code, 0) << after.all;
  auto jobs_after = ParseJson<bpnas::v1::ListJobsResponse>(after.out);
  ASSERT_EQ(jobs_after.jobs_size(), jobs_before.jobs_size());
  for (int i = 0; i < jobs_before.jobs_size(); ++i) {
    EXPECT_EQ(jobs_after.jobs(i).id(), jobs_before.jobs(i).id());
    EXPECT_EQ(jobs_after.jobs(i).state(), jobs_before.jobs(i).state());
  }
}

}  // namespace
}  // namespace bpnas
