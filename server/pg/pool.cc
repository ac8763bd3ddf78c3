#include "server/pg/pool.h"

#include <exception>
#include <iterator>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/pg/dsn.h"

namespace bpnas {

absl::StatusOr<std::shared_ptr<PgConnectionPool>> PgConnectionPool::Create(const std::string& dsn,
                                                                           PgPoolOptions options) {
  if (options.max_connections < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a pool needs at least 1 connection, got ", options.max_connections));
  }
  if (options.conflict_retries < 0) options.conflict_retries = 0;
  return std::shared_ptr<PgConnectionPool>(new PgConnectionPool(dsn, std::move(options)));
}

PgConnectionPool::PgConnectionPool(std::string dsn, PgPoolOptions options)
    : dsn_(std::move(dsn)), connect_dsn_(WithConnectTimeout(dsn_)), options_(std::move(options)) {}

PgConnectionPool::~PgConnectionPool() = default;

absl::Status PgConnectionPool::RunTransaction(const char* what, TxKind kind, const TxFunction& fn) {
  bool replaced_stale = false;
  int conflicts = 0;
  for (;;) {
    bool reused = false;
    BPNAS_ASSIGN_OR_RETURN(std::unique_ptr<pqxx::connection> conn, Acquire(&reused));
    bool started = false;
    bool broken = false;
    bool conflict = false;
    absl::Status failure;
    try {
      std::unique_ptr<pqxx::transaction_base> tx;
      if (kind == TxKind::kTransaction) {
        tx = std::make_unique<pqxx::work>(*conn);
      } else {
        tx = std::make_unique<pqxx::nontransaction>(*conn);
      }
      started = true;
      absl::Status out = fn(*tx);
      if (out.ok()) {
        tx->commit();
      } else {
        tx->abort();
      }
      tx.reset();
      Release(std::move(conn), /*broken=*/false);
      return out;
    } catch (const pqxx::broken_connection& e) {
      broken = true;
      failure = absl::UnavailableError(
          absl::StrCat(what, ": lost the connection to PostgreSQL (", RedactedDsn(dsn_), "): ", e.what()));
    } catch (const pqxx::in_doubt_error& e) {
      broken = true;
      failure = absl::UnavailableError(absl::StrCat(what,
                                                    ": the connection to PostgreSQL broke while committing; "
                                                    "the change may or may not have been stored: ",
                                                    e.what()));
    } catch (const pqxx::statement_completion_unknown& e) {
      broken = true;
      failure = absl::UnavailableError(absl::StrCat(
          what,
          ": the connection to PostgreSQL broke; the change may or may not have been stored: ", e.what()));
    } catch (const pqxx::transaction_rollback& e) {
      // Serialization failure or deadlock: the server rolled the transaction back, so running it
      // again is safe, and usually succeeds once the other transaction is done.
      conflict = true;
      failure = absl::AbortedError(absl::StrCat(what, ": transaction conflict, retry: ", e.what()));
    } catch (const pqxx::sql_error& e) {
      // Class 08 (connection exception) and 57P (the server is shutting down or starting up)
      // mean "try again later", not a bug.
      const std::string& state = e.sqlstate();
      if (absl::StartsWith(state, "08") || absl::StartsWith(state, "57P")) {
        broken = true;
        failure = absl::UnavailableError(
            absl::StrCat(what, ": PostgreSQL is unavailable (", state, "): ", e.what()));
      } else {
        failure = absl::InternalError(absl::StrCat(what, ": PostgreSQL error ", state, ": ", e.what()));
      }
    } catch (const std::exception& e) {
      failure = absl::InternalError(absl::StrCat(what, ": ", e.what()));
    }
    Release(std::move(conn), broken);
    // A pooled connection that the server dropped (e.g. it restarted) fails on BEGIN, before
    // anything ran: that is safe to retry once on a fresh connection.
    if (broken && reused && !started && !replaced_stale) {
      replaced_stale = true;
      continue;
    }
    if (conflict && conflicts < options_.conflict_retries) {
      ++conflicts;
      continue;
    }
    return failure;
  }
}

absl::StatusOr<std::unique_ptr<pqxx::connection>> PgConnectionPool::Acquire(bool* reused) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || open_ < options_.max_connections; });
    if (!idle_.empty()) {
      std::unique_ptr<pqxx::connection> conn = std::move(idle_.back());
      idle_.pop_back();
      *reused = true;
      return conn;
    }
    ++open_;
  }
  *reused = false;
  try {
    auto conn = std::make_unique<pqxx::connection>(connect_dsn_);
    for (const auto& [name, sql] : options_.prepared) conn->prepare(name, sql);
    return conn;
  } catch (const std::exception& e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
    }
    cv_.notify_one();
    return absl::UnavailableError(
        absl::StrCat("cannot connect to PostgreSQL (", RedactedDsn(dsn_), "): ", e.what()));
  }
}

void PgConnectionPool::Release(std::unique_ptr<pqxx::connection> conn, bool broken) {
  std::vector<std::unique_ptr<pqxx::connection>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken || !conn->is_open()) {
      dropped.push_back(std::move(conn));
      dropped.insert(dropped.end(), std::make_move_iterator(idle_.begin()),
                     std::make_move_iterator(idle_.end()));
      idle_.clear();
      open_ -= static_cast<int>(dropped.size());
    } else {
      idle_.push_back(std::move(conn));
    }
  }
  cv_.notify_all();
  // `dropped` closes its connections here, outside the lock.
}

}  // namespace bpnas
