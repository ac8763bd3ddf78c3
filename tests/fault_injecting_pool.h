// FaultInjectingPool: a PgPool (server/pg/pool.h) that wraps the real one and makes chosen
// transactions fail the way PostgreSQL and the network do, so store tests can pin what the store
// does then. The fault is raised inside the transaction, after the store's statements have run on
// the real database, as the libpqxx exception the real failure throws; the real pool turns it into
// a Status and rolls back (or, for kLostAtCommit, finds the commit done). So "nothing half-done is
// left" is checked against a real rollback, not assumed.
//
//   auto faults = std::make_shared<FaultInjectingPool>(real_pool);
//   auto store = PgJobStore::Open(faults);
//   faults->Inject("complete attempt", PgFault::kSerializationFailure, /*times=*/1);
//
// Thread-safe.
#ifndef BPNAS_TESTS_FAULT_INJECTING_POOL_H_
#define BPNAS_TESTS_FAULT_INJECTING_POOL_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include <pqxx/pqxx>

#include "server/pg/pool.h"

namespace bpnas {

enum class PgFault {
  kNone,
  // The server aborts the transaction (SQLSTATE 40001): it rolls back; running it again may work.
  kSerializationFailure,
  // The connection breaks before COMMIT is sent: the server rolls the transaction back.
  kLostBeforeCommit,
  // The connection breaks while committing, after the server committed: the client cannot tell.
  kLostAtCommit,
};

class FaultInjectingPool : public PgPool {
 public:
  explicit FaultInjectingPool(std::shared_ptr<PgPool> base) : base_(std::move(base)) {}

  // The next `times` runs of a transaction named `what` (the operation name the store passes to
  // the pool, e.g. "complete attempt") fail with `fault`. A run the pool repeats after a conflict
  // counts again.
  void Inject(const std::string& what, PgFault fault, int times = 1) {
    std::lock_guard<std::mutex> lock(mu_);
    planned_[what] = {fault, times};
  }

  // Faults raised so far.
  int raised() const {
    std::lock_guard<std::mutex> lock(mu_);
    return raised_;
  }

  absl::Status RunTransaction(const char* what, TxKind kind, const TxFunction& fn) override {
    const std::string name = what;
    return base_->RunTransaction(what, kind, [&](pqxx::transaction_base& tx) -> absl::Status {
      absl::Status status = fn(tx);
      if (!status.ok()) return status;
      switch (Take(name)) {
        case PgFault::kNone:
          break;
        case PgFault::kSerializationFailure:
          throw pqxx::serialization_failure(
              "ERROR:  could not serialize access due to concurrent update (injected)");
        case PgFault::kLostBeforeCommit:
          throw pqxx::broken_connection("server closed the connection unexpectedly (injected)");
        case PgFault::kLostAtCommit:
          tx.commit();
          throw pqxx::in_doubt_error("connection lost while committing (injected)");
      }
      return status;
    });
  }

 private:
  PgFault Take(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = planned_.find(what);
    if (it == planned_.end() || it->second.second <= 0) return PgFault::kNone;
    --it->second.second;
    ++raised_;
    return it->second.first;
  }

  std::shared_ptr<PgPool> base_;
  mutable std::mutex mu_;
  std::map<std::string, std::pair<PgFault, int>> planned_;  // guarded by mu_
  int raised_ = 0;                                          // guarded by mu_
};

}  // namespace bpnas

#endif  // BPNAS_TESTS_FAULT_INJECTING_POOL_H_
