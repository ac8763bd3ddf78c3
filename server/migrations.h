// Schema migrations (DESIGN.md §4): migrations/NNNN_name.sql, forward-only, compiled into the
// binary (cmake/embed_migrations.cmake), applied in name order at server start and recorded in
// schema_migrations. A landed migration is never edited; add a new file instead.
#ifndef BPNAS_SERVER_MIGRATIONS_H_
#define BPNAS_SERVER_MIGRATIONS_H_

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

// Applies every migration not yet recorded in schema_migrations, each in its own transaction,
// while holding a PostgreSQL advisory lock, so two servers starting at once never both migrate
// (the second waits, then finds nothing left to do). UNAVAILABLE if the database cannot be
// reached; INTERNAL naming the migration if one fails.
absl::Status ApplyMigrations(const std::string& dsn);

}  // namespace bpnas

#endif  // BPNAS_SERVER_MIGRATIONS_H_
