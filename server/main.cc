// bpnas-server: the coordinator (DESIGN.md §1). Options come from flags here and nowhere else.
#include <csignal>
#include <cstdlib>
#include <memory>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/status.h"
#include "server/coordinator.h"
#include "server/pg/migrations.h"
#include "server/pg/pg_job_store.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC address (SearchService and WorkerService)");
ABSL_FLAG(std::string, db, "host=127.0.0.1 port=5432 dbname=bpnas",
          "PostgreSQL connection string (libpq keyword/value or postgresql:// URI)");
ABSL_FLAG(std::string, http, "127.0.0.1:9464", "HTTP address for /healthz, /readyz and /metrics; empty: off");
ABSL_FLAG(int, db_pool, 16, "database connections");
ABSL_FLAG(int, db_wait_seconds, 30, "how long to wait for the database at start before giving up");
ABSL_FLAG(double, lease_seconds, 15, "a worker silent this long loses its assignment (the job is re-queued)");
ABSL_FLAG(int, heartbeat_ms, 1000, "heartbeat interval workers are told to keep");
ABSL_FLAG(int, max_attempts, 3, "attempts per job before it is FAILED");
ABSL_FLAG(int, max_ranks, 16, "largest number of data-parallel ranks a job may ask for");
ABSL_FLAG(int, progress_writers, 2, "threads committing batched progress reports");
ABSL_FLAG(std::string, log_level, "",
          "least severe log line written: DEBUG, INFO, WARNING or ERROR; empty: $BPNAS_LOG_LEVEL, else INFO");
ABSL_FLAG(int, grpc_max_pollers, 128,
          "gRPC threads kept polling (at least the number of calls expected in flight: a progress report "
          "holds its thread until its batch commits, and threads above this are created per call)");

namespace {

constexpr char kComponent[] = "server";

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

int Run() {
  using namespace bpnas;
  const std::string dsn = absl::GetFlag(FLAGS_db);
  if (absl::GetFlag(FLAGS_lease_seconds) <= 0 || absl::GetFlag(FLAGS_heartbeat_ms) <= 0 ||
      absl::GetFlag(FLAGS_max_attempts) < 1 || absl::GetFlag(FLAGS_db_pool) < 1 ||
      absl::GetFlag(FLAGS_max_ranks) < 1) {
    LogError(kComponent,
             "--lease_seconds, --heartbeat_ms, --max_attempts, --db_pool and --max_ranks must be positive");
    return 2;
  }
  if (absl::GetFlag(FLAGS_heartbeat_ms) >= absl::GetFlag(FLAGS_lease_seconds) * 1000) {
    LogError(kComponent, "--heartbeat_ms must be shorter than --lease_seconds");
    return 2;
  }

  // Migrate, waiting a while for a database that is still starting.
  absl::Status migrated;
  const absl::Time give_up = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_db_wait_seconds));
  for (;;) {
    migrated = ApplyMigrations(dsn);
    if (migrated.ok() || migrated.code() != absl::StatusCode::kUnavailable || absl::Now() > give_up || g_stop)
      break;
    absl::SleepFor(absl::Milliseconds(500));
  }
  if (!migrated.ok()) {
    LogError(kComponent, StatusToString(migrated));
    return 1;
  }
  auto store = PgJobStore::Open(dsn, absl::GetFlag(FLAGS_db_pool));
  if (!store.ok()) {
    LogError(kComponent, StatusToString(store.status()));
    return 1;
  }

  CoordinatorOptions co;
  co.listen = absl::GetFlag(FLAGS_listen);
  co.manager.lease = absl::Seconds(absl::GetFlag(FLAGS_lease_seconds));
  co.manager.heartbeat_interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_ms));
  co.manager.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  co.manager.max_ranks = absl::GetFlag(FLAGS_max_ranks);
  co.progress_writers = absl::GetFlag(FLAGS_progress_writers);
  co.grpc_max_pollers = absl::GetFlag(FLAGS_grpc_max_pollers);

  std::unique_ptr<HttpServer> http;
  if (!absl::GetFlag(FLAGS_http).empty()) {
    auto h = HttpServer::Start(absl::GetFlag(FLAGS_http), 2);
    if (!h.ok()) {
      LogError(kComponent, "--http ", absl::GetFlag(FLAGS_http), ": ", StatusToString(h.status()));
      return 1;
    }
    http = std::move(*h);
  }
  auto coordinator = Coordinator::Start(store->get(), co);
  if (!coordinator.ok()) {
    LogError(kComponent, "--listen: ", StatusToString(coordinator.status()));
    return 1;
  }
  if (http) (*coordinator)->ServeHttp(http.get());
  LogInfo(kComponent, "gRPC on ", absl::GetFlag(FLAGS_listen),
          http ? absl::StrCat(", HTTP on port ", http->port()) : std::string());

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  LogInfo(kComponent, "shutting down");
  http.reset();  // its handlers use the coordinator
  coordinator->reset();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the bpnas coordinator: keeps jobs in PostgreSQL, serves SearchService and WorkerService over gRPC.\n"
      "  bpnas-server --db 'host=... dbname=bpnas' [--listen 127.0.0.1:50051] [--http 127.0.0.1:9464]");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = bpnas::SetMinLogLevelFromFlag(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    bpnas::LogError(kComponent, "--log_level: ", s.message());
    return 2;
  }
  return Run();
}
