// bpnas-worker: one rank of a search (DESIGN.md §1). Options come from flags here and nowhere else.
#include <csignal>
#include <thread>

#include <torch/cuda.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/memory.h"
#include "common/openmp_wait.h"
#include "common/status.h"
#include "worker/agent.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "coordinator gRPC address");
ABSL_FLAG(std::string, device, "cpu", "cpu or gpu: the kind of jobs this worker takes");
ABSL_FLAG(int, threads, 0, "CPU threads for training; 0: the job's setting, else every core");
ABSL_FLAG(std::string, name, "", "name shown by the coordinator; default host:pid");
ABSL_FLAG(std::string, http, "127.0.0.1:9465", "HTTP address for /metrics and /healthz; empty: off");
ABSL_FLAG(int, report_every, 10, "training steps between progress reports");
ABSL_FLAG(std::string, advertise_host, "127.0.0.1",
          "address the other ranks of a job reach this worker at when it is rank 0");
ABSL_FLAG(double, collective_timeout_seconds, 60, "timeout of every collective and of the rendezvous");
ABSL_FLAG(std::string, log_level, "",
          "least severe log line written: DEBUG, INFO, WARNING or ERROR; empty: $BPNAS_LOG_LEVEL, else INFO");

namespace {
constexpr char kComponent[] = "worker";
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }
}  // namespace

int main(int argc, char** argv) {
  bpnas::ReexecWithShortOpenMpSpin(argv);  // before anything else: it starts the program again
  absl::SetProgramUsageMessage(
      "one bpnas search rank: registers with the coordinator and runs the searches it is given.\n"
      "  bpnas-worker --server HOST:50051 [--device cpu] [--threads N] [--http 127.0.0.1:9465]");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = bpnas::SetMinLogLevelFromFlag(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    bpnas::LogError(kComponent, "--log_level: ", s.message());
    return 2;
  }
  bpnas::TuneAllocatorForTraining();
  bpnas::WorkerOptions o;
  o.server = absl::GetFlag(FLAGS_server);
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device == "cpu") {
    o.device = bpnas::v1::CPU;
  } else if (device == "gpu") {
    o.device = bpnas::v1::GPU;
    // A GPU worker trains on CUDA device 0 (set CUDA_VISIBLE_DEVICES to choose) and joins over NCCL.
    if (!torch::cuda::is_available()) {
      bpnas::LogError(kComponent,
                      "--device gpu: no CUDA device is visible to LibTorch (a CPU-only LibTorch, "
                      "no driver, or CUDA_VISIBLE_DEVICES empty)");
      return 2;
    }
  } else {
    bpnas::LogError(kComponent, "--device: cpu or gpu, got \"", device, "\"");
    return 2;
  }
  if (absl::GetFlag(FLAGS_threads) < 0 || absl::GetFlag(FLAGS_report_every) < 1) {
    bpnas::LogError(kComponent, "--threads must be >= 0 and --report_every >= 1");
    return 2;
  }
  o.threads = absl::GetFlag(FLAGS_threads);
  o.name = absl::GetFlag(FLAGS_name);
  o.report_every = absl::GetFlag(FLAGS_report_every);
  o.advertise_host = absl::GetFlag(FLAGS_advertise_host);
  o.collective_timeout_seconds = absl::GetFlag(FLAGS_collective_timeout_seconds);
  if (!(o.collective_timeout_seconds > 0)) {
    bpnas::LogError(kComponent, "--collective_timeout_seconds must be positive");
    return 2;
  }
  bpnas::WorkerAgent agent(o);

  std::unique_ptr<bpnas::HttpServer> http;
  if (!absl::GetFlag(FLAGS_http).empty()) {
    auto h = bpnas::HttpServer::Start(absl::GetFlag(FLAGS_http), 1);
    if (!h.ok()) {
      bpnas::LogError(kComponent, "--http ", absl::GetFlag(FLAGS_http), ": ",
                      bpnas::StatusToString(h.status()));
      return 1;
    }
    http = std::move(*h);
    http->Handle("/healthz", [] { return bpnas::HttpResponse{200, "text/plain; charset=utf-8", "ok\n"}; });
    http->Handle("/metrics", [&agent] {
      return bpnas::HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", agent.Metrics()};
    });
    bpnas::LogInfo(kComponent, "metrics on port ", http->port());
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  agent.Run(&g_stop);
  return 0;
}
