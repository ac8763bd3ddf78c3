#include "tests/pg_test_env.h"

#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <pqxx/pqxx>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "server/pg/migrations.h"

namespace bpnas {
namespace {

class PgTestEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    absl::Status started = PgTestEnv::Get().StartUp();
    ASSERT_TRUE(started.ok()) << "cannot start the test PostgreSQL server: " << started;
  }
  void TearDown() override { PgTestEnv::Get().ShutDown(); }
};

// Registered before main() runs; gtest owns the object.
[[maybe_unused]] ::testing::Environment* const kRegistered =
    ::testing::AddGlobalTestEnvironment(new PgTestEnvironment);

}  // namespace

PgTestEnv& PgTestEnv::Get() {
  static PgTestEnv* env = new PgTestEnv();
  return *env;
}

absl::Status PgTestEnv::StartUp() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/bpnas-pgtest-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern, " failed"));
  }
  dir_ = pattern;
  // mkdtemp makes it 0700; LocalPostgres hands it to the postgres user when we are root.
  absl::StatusOr<std::unique_ptr<LocalPostgres>> server =
      LocalPostgres::Start(dir_, PickFreePort(), /*durable=*/false);
  if (!server.ok()) return server.status();
  server_ = std::move(*server);
  dsn_ = server_->dsn();
  return ApplyMigrations(dsn_);
}

void PgTestEnv::ShutDown() {
  if (server_ != nullptr) {
    absl::Status stopped = server_->Stop();
    if (!stopped.ok())
      std::fprintf(stderr, "stopping the test PostgreSQL server: %s\n", stopped.ToString().c_str());
    server_.reset();
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

absl::Status PgTestEnv::Reset() {
  try {
    pqxx::connection conn(dsn_);
    pqxx::work tx(conn);
    tx.exec(
        "TRUNCATE jobs, workers, attempts, assignments, progress, blobs, blob_chunks "
        "RESTART IDENTITY CASCADE");
    tx.commit();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot empty the test database: ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> PgTestEnv::CreateEmptyDatabase(const std::string& name) {
  try {
    pqxx::connection conn(dsn_);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP DATABASE IF EXISTS ", tx.quote_name(name)));
    tx.exec(absl::StrCat("CREATE DATABASE ", tx.quote_name(name)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot create database ", name, ": ", e.what()));
  }
  return absl::StrCat("host=127.0.0.1 port=", server_->port(), " dbname=", name,
                      " user=", pqxx::connection(dsn_).username());
}

}  // namespace bpnas
