#include "server/pg/migrations.h"

#include <memory>
#include <string>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/pg/pool.h"

namespace bpnas {
namespace {

// The advisory lock every migrating server takes (an arbitrary constant: "bpnas" + "mig" in ASCII).
constexpr int64_t kMigrationLockKey = 0x62706e61736d6967;

// Waits for the migration lock; it is held until the end of the transaction.
void TakeMigrationLock(pqxx::transaction_base& tx) {
  tx.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
}

}  // namespace

absl::Status ApplyMigrations(const std::string& dsn) {
  PgPoolOptions options;
  options.max_connections = 1;
  BPNAS_ASSIGN_OR_RETURN(std::shared_ptr<PgConnectionPool> pool, PgConnectionPool::Create(dsn, options));
  // Each step is one transaction that first takes the lock, so steps of two servers never
  // interleave inside a step, and a server that waited finds the step done.
  BPNAS_RETURN_IF_ERROR(pool->RunTransaction("create schema_migrations", TxKind::kTransaction,
                                             [](pqxx::transaction_base& tx) -> absl::Status {
                                               TakeMigrationLock(tx);
                                               tx.exec(
                                                   "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                                   "  name text PRIMARY KEY,"
                                                   "  applied_at timestamptz NOT NULL DEFAULT now())");
                                               return absl::OkStatus();
                                             }));
  for (const Migration& migration : EmbeddedMigrations()) {
    const std::string what = absl::StrCat("migration ", migration.name);
    BPNAS_RETURN_IF_ERROR(pool->RunTransaction(
        what.c_str(), TxKind::kTransaction, [&](pqxx::transaction_base& tx) -> absl::Status {
          TakeMigrationLock(tx);
          if (!tx.exec_params("SELECT 1 FROM schema_migrations WHERE name = $1", migration.name).empty()) {
            return absl::OkStatus();
          }
          tx.exec(migration.sql);  // may hold several statements: the simple query protocol allows it
          tx.exec_params("INSERT INTO schema_migrations (name) VALUES ($1)", migration.name);
          return absl::OkStatus();
        }));
  }
  return absl::OkStatus();
}

}  // namespace bpnas
