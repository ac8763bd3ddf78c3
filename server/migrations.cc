#include "server/migrations.h"

#include <exception>
#include <memory>
#include <pqxx/pqxx>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/pg_job_store.h"

namespace bpnas {
namespace {

// The advisory lock every migrating server takes (an arbitrary constant: "bpnas" + "mig" in ASCII).
constexpr int64_t kMigrationLockKey = 0x62706e61736d6967;

}  // namespace

absl::Status ApplyMigrations(const std::string& dsn) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(WithConnectTimeout(dsn));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to PostgreSQL (", RedactedDsn(dsn), "): ", e.what()));
  }

  std::string current = "(taking the migration lock)";
  try {
    // Session-level lock: held across the transactions below, released by the unlock or, if this
    // process dies, when its connection closes.
    {
      pqxx::nontransaction tx(*conn);
      tx.exec_params("SELECT pg_advisory_lock($1)", kMigrationLockKey);
    }
    {
      current = "(creating schema_migrations)";
      pqxx::work tx(*conn);
      tx.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations ("
          "  name text PRIMARY KEY,"
          "  applied_at timestamptz NOT NULL DEFAULT now())");
      tx.commit();
    }
    for (const Migration& migration : EmbeddedMigrations()) {
      current = migration.name;
      pqxx::work tx(*conn);
      if (!tx.exec_params("SELECT 1 FROM schema_migrations WHERE name = $1", migration.name).empty()) {
        continue;
      }
      tx.exec(migration.sql);  // may hold several statements: the simple query protocol allows it
      tx.exec_params("INSERT INTO schema_migrations (name) VALUES ($1)", migration.name);
      tx.commit();
    }
    {
      pqxx::nontransaction tx(*conn);
      tx.exec_params("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
    }
  } catch (const pqxx::broken_connection& e) {
    return absl::UnavailableError(absl::StrCat("lost the connection to PostgreSQL (", RedactedDsn(dsn),
                                               ") while applying migration ", current, ": ", e.what()));
  } catch (const std::exception& e) {
    // Closing the connection (unique_ptr) releases the advisory lock.
    return absl::InternalError(absl::StrCat("migration ", current, " failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace bpnas
