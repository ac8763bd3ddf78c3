// A private PostgreSQL server for the tests of one test binary.
//
// Link pg_test_env.cc into a gtest binary and it registers a global test environment that, before
// the first test, starts one LocalPostgres (non-durable: fast) in a fresh folder under the temp
// directory, on a free port, and applies the migrations; after the last test it stops the server
// and deletes the folder. A test starts from empty tables by calling Reset():
//
//   class MyStoreTest : public ::testing::Test {
//    protected:
//     void SetUp() override { ASSERT_TRUE(PgTestEnv::Get().Reset().ok()); }
//   };
//
// PostgreSQL is a build dependency (scripts/bootstrap.sh installs it): a failure to start it
// fails every test rather than skipping them.
#ifndef BPNAS_TESTS_PG_TEST_ENV_H_
#define BPNAS_TESTS_PG_TEST_ENV_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/pg_cluster.h"

namespace bpnas {

class PgTestEnv {
 public:
  // The environment of this binary (started by the time a test runs).
  static PgTestEnv& Get();

  // DSN of the migrated database `bpnas`.
  const std::string& dsn() const { return dsn_; }
  LocalPostgres& server() { return *server_; }

  // Empties every table of the schema (and restarts its identity sequences).
  absl::Status Reset();
  // A new, empty (not migrated) database `name` on the same server; returns its DSN.
  absl::StatusOr<std::string> CreateEmptyDatabase(const std::string& name);

  // Called by the registered gtest environment.
  absl::Status StartUp();
  void ShutDown();

 private:
  std::string dir_;
  std::unique_ptr<LocalPostgres> server_;
  std::string dsn_;
};

}  // namespace bpnas

#endif  // BPNAS_TESTS_PG_TEST_ENV_H_
