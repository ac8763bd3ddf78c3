// Schema migrations (DESIGN.md §4): migrations/NNNN_name.sql, forward-only, compiled into the
// binary (cmake/embed_migrations.cmake), applied in name order at server start and recorded in
// schema_migrations. A landed migration is never edited; add a new file instead.
#ifndef BPNAS_SERVER_PG_MIGRATIONS_H_
#define BPNAS_SERVER_PG_MIGRATIONS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace bpnas {

struct Migration {
  const char* name;  // file name without .sql, e.g. "0001_init"
  const char* sql;
};

// Every migration file, sorted by name.
const std::vector<Migration>& EmbeddedMigrations();

// Applies every migration not yet recorded in schema_migrations, in name order, each in its own
// transaction holding a PostgreSQL advisory lock (transaction-scoped), so two servers starting at
// once never both apply one (the second waits, then finds it applied). Errors come from the pool
// (server/pg/pool.h): UNAVAILABLE if the database cannot be reached (naming it without the
// password); INTERNAL naming the migration if one fails. Migrations applied before a failure stay.
absl::Status ApplyMigrations(const std::string& dsn);

}  // namespace bpnas

#endif  // BPNAS_SERVER_PG_MIGRATIONS_H_
