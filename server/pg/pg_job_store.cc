#include "server/pg/pg_job_store.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <openssl/rand.h>
#include <pqxx/pqxx>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "server/pg/blobs.h"
#include "server/pg/migrations.h"

namespace bpnas {

using bpnas::v1::HeartbeatResponse;
using bpnas::v1::Job;
using bpnas::v1::JobSpec;
using bpnas::v1::JobState;
using bpnas::v1::Progress;
using bpnas::v1::SearchResult;

namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers.

// `bytes` random bytes from a cryptographically secure source (OpenSSL, seeded by the operating
// system), as 2 * bytes lowercase hex digits. Attempt tokens are capabilities: they must not be
// guessable.
absl::StatusOr<std::string> RandomHex(int bytes) {
  std::string raw(static_cast<size_t>(bytes), '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) != 1) {
    return absl::InternalError("the random source failed");
  }
  return absl::BytesToHexString(raw);
}

std::string DeviceKindName(bpnas::v1::DeviceKind kind) { return kind == bpnas::v1::GPU ? "GPU" : "CPU"; }

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

template <typename Message>
absl::Status ParseStored(const pqxx::field& field, const char* what, const std::string& owner, Message* out) {
  pqxx::binarystring bytes(field);
  if (!out->ParseFromArray(bytes.get(), static_cast<int>(bytes.size()))) {
    return absl::InternalError(absl::StrCat("the stored ", what, " of ", owner, " is corrupt"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// SQL shared by several methods.

// A whole Job: the row, its artifact's checksum and the newest non-superseded progress report of
// its latest attempt. Followed by a WHERE / ORDER BY on `j`.
constexpr char kSelectJob[] = R"sql(
SELECT j.id, j.name, j.state, j.phase, j.spec, coalesce(j.request_id, ''),
       floor(extract(epoch FROM j.created_at) * 1000)::bigint,
       floor(extract(epoch FROM j.updated_at) * 1000)::bigint,
       j.attempts, j.error, j.result, j.budget,
       coalesce(b.sha256, ''), coalesce(b.total_bytes, 0),
       lp.attempt, lp.step, floor(extract(epoch FROM lp.reported_at) * 1000)::bigint, lp.body
FROM jobs j
LEFT JOIN blobs b ON b.id = j.artifact_id
LEFT JOIN LATERAL (
  SELECT p.attempt, p.step, p.reported_at, p.body
  FROM progress p
  WHERE p.job_id = j.id AND p.attempt = j.attempts AND NOT p.superseded
  ORDER BY p.step DESC
  LIMIT 1) lp ON true
)sql";

// A progress row: the stored body with the fields the store owns filled from the row.
absl::StatusOr<Progress> ProgressFromRow(const std::string& job_id, const pqxx::field& attempt,
                                         const pqxx::field& step, const pqxx::field& reported_ms,
                                         const pqxx::field& body) {
  Progress progress;
  BPNAS_RETURN_IF_ERROR(ParseStored(body, "progress report", job_id, &progress));
  progress.set_attempt(attempt.as<uint32_t>());
  progress.set_step(step.as<int64_t>());
  progress.set_reported_unix_ms(reported_ms.as<int64_t>());
  return progress;
}

absl::StatusOr<Job> JobFromRow(const pqxx::row& row) {
  Job job;
  job.set_id(row[0].as<std::string>());
  job.set_name(row[1].as<std::string>());
  JobState state;
  if (!bpnas::v1::JobState_Parse(row[2].as<std::string>(), &state)) {
    return absl::InternalError(
        absl::StrCat("job ", job.id(), " has an unknown stored state ", row[2].as<std::string>()));
  }
  job.set_state(state);
  job.set_phase(row[3].as<std::string>());
  BPNAS_RETURN_IF_ERROR(ParseStored(row[4], "spec", job.id(), job.mutable_spec()));
  job.set_request_id(row[5].as<std::string>());
  job.set_created_unix_ms(row[6].as<int64_t>());
  job.set_updated_unix_ms(row[7].as<int64_t>());
  job.set_attempts(row[8].as<uint32_t>());
  job.set_error(row[9].as<std::string>());
  if (!row[10].is_null()) {
    BPNAS_RETURN_IF_ERROR(ParseStored(row[10], "result", job.id(), job.mutable_result()));
  }
  job.set_budget(row[11].as<double>());
  job.set_artifact_sha256(row[12].as<std::string>());
  job.set_artifact_bytes(row[13].as<int64_t>());
  if (!row[14].is_null()) {
    BPNAS_ASSIGN_OR_RETURN(*job.mutable_latest_progress(),
                           ProgressFromRow(job.id(), row[14], row[15], row[16], row[17]));
  }
  return job;
}

// The job `job_id` as of this transaction; NOT_FOUND if there is none.
absl::StatusOr<Job> LoadJob(pqxx::transaction_base& tx, const std::string& job_id) {
  pqxx::result r = tx.exec_params(absl::StrCat(kSelectJob, " WHERE j.id = $1"), job_id);
  if (r.empty()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
  return JobFromRow(r[0]);
}

// Ends every active assignment of the job's attempt `attempt` (all attempts when attempt == 0)
// and sends their busy workers back to IDLE (a LOST worker stays LOST).
void EndAssignments(pqxx::transaction_base& tx, const std::string& job_id, int64_t attempt) {
  tx.exec_params(R"sql(
    WITH ended AS (
      UPDATE assignments SET active = false, ended_at = now()
      WHERE job_id = $1 AND ($2 = 0 OR attempt = $2) AND active
      RETURNING worker_id)
    UPDATE workers SET state = 'IDLE'
    WHERE id IN (SELECT worker_id FROM ended) AND state = 'BUSY')sql",
                 job_id, attempt);
}

// After attempt `attempt` of a job ended without success: the job goes back to QUEUED, or to
// FAILED once it has had max_attempts attempts. `why` says what ended the attempt.
JobState RequeueOrFail(pqxx::transaction_base& tx, const std::string& job_id, int64_t attempt,
                       int max_attempts, const std::string& why) {
  const bool give_up = attempt >= std::max(max_attempts, 1);
  const std::string error = give_up ? absl::StrCat(why, "; gave up after ", attempt, " attempts") : why;
  // The next attempt resumes from the newest checkpoint and reports those steps again: what this
  // attempt reported after that checkpoint is superseded, so every step is visible once.
  tx.exec_params(R"sql(
      UPDATE progress SET superseded = true
      WHERE job_id = $1 AND attempt = $2 AND step > coalesce(
          (SELECT max(step) FROM blobs WHERE job_id = $1 AND kind = 'CHECKPOINT' AND complete), 0))sql",
                 job_id, attempt);
  tx.exec_params(
      "UPDATE jobs SET state = $2, error = $3, phase = CASE WHEN $2 = 'QUEUED' THEN '' ELSE phase END,"
      " updated_at = now() WHERE id = $1",
      job_id, give_up ? "FAILED" : "QUEUED", error);
  return give_up ? bpnas::v1::FAILED : bpnas::v1::QUEUED;
}

// AppendProgress's statement, prepared on every pooled connection. $1 tokens, $2 steps, $3 phases,
// $4 bodies (hex), as arrays of equal length; returns the (0-based) indices of the reports whose
// attempt is running.
constexpr char kAppendProgressStatement[] = "append_progress";
constexpr char kAppendProgressSql[] = R"sql(
    WITH input (idx, token, step, phase, body) AS (
      SELECT t.ord - 1, t.token, t.step, t.phase, decode(t.body_hex, 'hex')
      FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[])
           WITH ORDINALITY AS t (token, step, phase, body_hex, ord)),
    -- The running attempts the tokens belong to. Their jobs are locked (in id order, like every
    -- other writer) so that a concurrent cancel or completion either comes first, and these
    -- reports are refused, or waits for them.
    live AS (
      SELECT s.token, s.job_id, s.attempt
      FROM assignments s JOIN jobs j ON j.id = s.job_id
      WHERE s.token IN (SELECT token FROM input) AND s.active
        AND j.state = 'RUNNING' AND j.attempts = s.attempt
      ORDER BY j.id
      FOR NO KEY UPDATE OF j),
    stored AS (
      INSERT INTO progress (job_id, attempt, step, phase, body)
      SELECT DISTINCT ON (l.job_id, l.attempt, i.step) l.job_id, l.attempt, i.step, i.phase, i.body
      FROM input i JOIN live l ON l.token = i.token
      ORDER BY l.job_id, l.attempt, i.step, i.idx
      ON CONFLICT (job_id, attempt, step) DO NOTHING
      RETURNING job_id, attempt, step, phase),
    newest AS (
      SELECT DISTINCT ON (job_id) job_id, attempt, step, phase
      FROM stored ORDER BY job_id, attempt DESC, step DESC),
    phase_update AS (
      UPDATE jobs j SET phase = n.phase
      FROM newest n
      WHERE j.id = n.job_id AND j.phase <> n.phase
        AND NOT EXISTS (SELECT 1 FROM progress p
                        WHERE p.job_id = n.job_id AND p.attempt = n.attempt AND p.step > n.step))
    SELECT idx FROM input WHERE token IN (SELECT token FROM live))sql";

}  // namespace

// ---------------------------------------------------------------------------------------------
// PgJobStore.

PgJobStore::PgJobStore(std::shared_ptr<PgPool> pool) : pool_(std::move(pool)) {}
PgJobStore::~PgJobStore() = default;

PgPoolOptions PgJobStore::PoolOptions(int pool_size) {
  PgPoolOptions options;
  options.max_connections = pool_size;
  options.prepared = {{kAppendProgressStatement, kAppendProgressSql}};
  return options;
}

absl::StatusOr<std::unique_ptr<PgJobStore>> PgJobStore::Open(const std::string& dsn, int pool_size) {
  if (pool_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("pool_size must be at least 1, got ", pool_size));
  }
  BPNAS_ASSIGN_OR_RETURN(std::shared_ptr<PgConnectionPool> pool,
                         PgConnectionPool::Create(dsn, PoolOptions(pool_size)));
  return Open(std::move(pool));
}

absl::StatusOr<std::unique_ptr<PgJobStore>> PgJobStore::Open(std::shared_ptr<PgPool> pool) {
  if (pool == nullptr) return absl::InvalidArgumentError("pool is null");
  BPNAS_RETURN_IF_ERROR(pool->RunTransaction("connect", TxKind::kSingleStatement,
                                             [](pqxx::transaction_base& tx) -> absl::Status {
                                               tx.exec("SELECT 1");
                                               return absl::OkStatus();
                                             }));
  return std::unique_ptr<PgJobStore>(new PgJobStore(std::move(pool)));
}

// ---- jobs ----

absl::StatusOr<std::pair<Job, bool>> PgJobStore::CreateJob(const std::string& request_id, const JobSpec& spec,
                                                           double budget) {
  const int64_t ranks = spec.has_ranks() ? spec.ranks() : 1;
  if (ranks < 1) return absl::InvalidArgumentError("spec.ranks must be at least 1");
  std::string spec_bytes;
  if (!spec.SerializeToString(&spec_bytes)) return absl::InternalError("cannot serialize the job spec");
  return pool_->Run<std::pair<Job, bool>>(
      "create job", TxKind::kTransaction,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::pair<Job, bool>> {
        // A random id collides with negligible odds; a collision just draws another.
        for (int draw = 0; draw < 8; ++draw) {
          BPNAS_ASSIGN_OR_RETURN(const std::string id_hex, RandomHex(6));
          const std::string id = "j-" + id_hex;
          // ON CONFLICT without a target: a request_id seen before (also one being inserted by a
          // concurrent call, which this waits for) and an id collision both insert nothing.
          pqxx::result inserted = tx.exec_params(
              "INSERT INTO jobs (id, name, request_id, state, spec, device_kind, ranks, budget) "
              "VALUES ($1, $2, NULLIF($3, ''), 'QUEUED', $4, $5, $6, $7) "
              "ON CONFLICT DO NOTHING RETURNING id",
              id, spec.name(), request_id, pqxx::binarystring(spec_bytes.data(), spec_bytes.size()),
              DeviceKindName(spec.device()), ranks, budget);
          if (!inserted.empty()) {
            BPNAS_ASSIGN_OR_RETURN(Job job, LoadJob(tx, id));
            return std::make_pair(std::move(job), true);
          }
          if (!request_id.empty()) {
            pqxx::result earlier = tx.exec_params("SELECT id FROM jobs WHERE request_id = $1", request_id);
            if (!earlier.empty()) {
              BPNAS_ASSIGN_OR_RETURN(Job job, LoadJob(tx, earlier[0][0].as<std::string>()));
              return std::make_pair(std::move(job), false);
            }
          }
        }
        return absl::InternalError("could not draw an unused job id");
      });
}

absl::StatusOr<Job> PgJobStore::GetJob(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job id is empty");
  return pool_->Run<Job>("get job", TxKind::kSingleStatement,
                         [&](pqxx::transaction_base& tx) { return LoadJob(tx, job_id); });
}

absl::StatusOr<std::vector<Job>> PgJobStore::ListJobs(JobState state, int limit) {
  if (limit < 1) return absl::InvalidArgumentError(absl::StrCat("limit must be positive, got ", limit));
  if (!bpnas::v1::JobState_IsValid(state)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown job state ", static_cast<int>(state)));
  }
  return pool_->Run<std::vector<Job>>(
      "list jobs", TxKind::kSingleStatement,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::vector<Job>> {
        pqxx::result r =
            state == bpnas::v1::JOB_STATE_UNSPECIFIED
                ? tx.exec_params(absl::StrCat(kSelectJob, " ORDER BY j.seq DESC LIMIT $1"), limit)
                : tx.exec_params(absl::StrCat(kSelectJob, " WHERE j.state = $1 ORDER BY j.seq DESC LIMIT $2"),
                                 bpnas::v1::JobState_Name(state), limit);
        std::vector<Job> jobs;
        jobs.reserve(r.size());
        for (const pqxx::row& row : r) {
          BPNAS_ASSIGN_OR_RETURN(Job job, JobFromRow(row));
          jobs.push_back(std::move(job));
        }
        return jobs;
      });
}

absl::StatusOr<std::map<JobState, int64_t>> PgJobStore::CountJobsByState() {
  return pool_->Run<std::map<JobState, int64_t>>(
      "count jobs", TxKind::kSingleStatement,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::map<JobState, int64_t>> {
        std::map<JobState, int64_t> counts;
        for (JobState s : {bpnas::v1::QUEUED, bpnas::v1::RUNNING, bpnas::v1::SUCCEEDED, bpnas::v1::FAILED,
                           bpnas::v1::CANCELLED}) {
          counts[s] = 0;
        }
        for (const pqxx::row& row : tx.exec("SELECT state, count(*) FROM jobs GROUP BY state")) {
          JobState state;
          if (!bpnas::v1::JobState_Parse(row[0].as<std::string>(), &state)) {
            return absl::InternalError(absl::StrCat("unknown stored job state ", row[0].as<std::string>()));
          }
          counts[state] = row[1].as<int64_t>();
        }
        return counts;
      });
}

absl::StatusOr<Job> PgJobStore::CancelJob(const std::string& job_id, const std::string& reason) {
  if (job_id.empty()) return absl::InvalidArgumentError("job id is empty");
  const std::string error = reason.empty() ? "cancelled" : reason;
  return pool_->Run<Job>(
      "cancel job", TxKind::kTransaction, [&](pqxx::transaction_base& tx) -> absl::StatusOr<Job> {
        pqxx::result r = tx.exec_params("SELECT state FROM jobs WHERE id = $1 FOR UPDATE", job_id);
        if (r.empty()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
        const std::string state = r[0][0].as<std::string>();
        if (state == "CANCELLED") return LoadJob(tx, job_id);
        if (state != "QUEUED" && state != "RUNNING") {
          return absl::FailedPreconditionError(absl::StrCat(
              "job ", job_id, " has already ", state, "; only a QUEUED or RUNNING job can be cancelled"));
        }
        tx.exec_params("UPDATE jobs SET state = 'CANCELLED', error = $2, updated_at = now() WHERE id = $1",
                       job_id, error);
        tx.exec_params(
            "UPDATE attempts SET state = 'CANCELLED', error = $2, ended_at = now() "
            "WHERE job_id = $1 AND state = 'RUNNING'",
            job_id, error);
        EndAssignments(tx, job_id, /*attempt=*/0);
        return LoadJob(tx, job_id);
      });
}

// ---- workers ----

absl::StatusOr<std::string> PgJobStore::RegisterWorker(const bpnas::v1::RegisterRequest& request,
                                                       absl::Duration lease) {
  if (lease <= absl::ZeroDuration()) return absl::InvalidArgumentError("worker lease must be positive");
  return pool_->Run<std::string>(
      "register worker", TxKind::kSingleStatement,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::string> {
        BPNAS_ASSIGN_OR_RETURN(const std::string id_hex, RandomHex(6));
        const std::string id = "w-" + id_hex;
        pqxx::result r = tx.exec_params(
            "INSERT INTO workers (id, name, device_kind, threads, metrics_address, state, lease_expires_at) "
            "VALUES ($1, $2, $3, $4, $5, 'IDLE', now() + $6::double precision * interval '1 microsecond') "
            "ON CONFLICT (id) DO NOTHING RETURNING id",
            id, request.name(), DeviceKindName(request.device()), static_cast<int64_t>(request.threads()),
            request.metrics_address(), Micros(lease));
        // A collision of 48 random bits: the caller may simply register again.
        if (r.empty()) return absl::AbortedError("worker id collision; register again");
        return id;
      });
}

absl::StatusOr<HeartbeatResponse> PgJobStore::Heartbeat(const std::string& worker_id,
                                                        const std::string& attempt_token,
                                                        absl::Duration lease) {
  if (worker_id.empty()) return absl::InvalidArgumentError("worker id is empty");
  if (lease <= absl::ZeroDuration()) return absl::InvalidArgumentError("worker lease must be positive");
  return pool_->Run<HeartbeatResponse>(
      "heartbeat", TxKind::kTransaction,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<HeartbeatResponse> {
        pqxx::result renewed = tx.exec_params(
            "UPDATE workers SET lease_expires_at = now() + $2::double precision * interval '1 microsecond', "
            "last_seen_at = now() "
            "WHERE id = $1 AND state <> 'LOST' RETURNING id",
            worker_id, Micros(lease));
        if (renewed.empty()) {
          pqxx::result known = tx.exec_params("SELECT 1 FROM workers WHERE id = $1", worker_id);
          if (known.empty())
            return absl::NotFoundError(absl::StrCat("unknown worker ", worker_id, "; register"));
          return absl::NotFoundError(absl::StrCat("worker ", worker_id,
                                                  " was declared lost (no heartbeat within its lease); "
                                                  "register again"));
        }
        pqxx::result a = tx.exec_params(R"sql(
          SELECT s.token, s.job_id, s.attempt, s.rank, t.world_size, j.spec,
                 EXISTS (SELECT 1 FROM blobs b
                         WHERE b.job_id = s.job_id AND b.kind = 'CHECKPOINT' AND b.complete),
                 t.rendezvous
          FROM assignments s
          JOIN attempts t ON t.job_id = s.job_id AND t.attempt = s.attempt
          JOIN jobs j ON j.id = s.job_id
          WHERE s.worker_id = $1 AND s.active)sql",
                                        worker_id);
        HeartbeatResponse response;
        if (!a.empty()) {
          response.set_action(HeartbeatResponse::RUN);
          bpnas::v1::Assignment* assignment = response.mutable_assignment();
          assignment->set_attempt_token(a[0][0].as<std::string>());
          assignment->set_job_id(a[0][1].as<std::string>());
          assignment->set_attempt(a[0][2].as<uint32_t>());
          assignment->set_rank(a[0][3].as<uint32_t>());
          assignment->set_world_size(a[0][4].as<uint32_t>());
          BPNAS_RETURN_IF_ERROR(
              ParseStored(a[0][5], "spec", assignment->job_id(), assignment->mutable_spec()));
          assignment->set_has_checkpoint(a[0][6].as<bool>());
          assignment->set_rendezvous(a[0][7].as<std::string>());
        } else if (!attempt_token.empty()) {
          response.set_action(HeartbeatResponse::STOP);
        } else {
          response.set_action(HeartbeatResponse::IDLE);
        }
        return response;
      });
}

absl::Status PgJobStore::RenewBusyWorkerLeases(absl::Duration lease) {
  if (lease <= absl::ZeroDuration()) return absl::InvalidArgumentError("worker lease must be positive");
  return pool_
      ->Run<bool>("renew busy worker leases", TxKind::kSingleStatement,
                  [&](pqxx::transaction_base& tx) -> absl::StatusOr<bool> {
                    tx.exec_params(
                        "UPDATE workers SET lease_expires_at = greatest(lease_expires_at, "
                        "now() + $1::double precision * interval '1 microsecond') WHERE state = 'BUSY'",
                        Micros(lease));
                    return true;
                  })
      .status();
}

absl::Status PgJobStore::PublishRendezvous(const std::string& attempt_token, const std::string& address) {
  if (attempt_token.empty()) return absl::InvalidArgumentError("attempt token is empty");
  if (address.empty()) return absl::InvalidArgumentError("rendezvous address is empty");
  return pool_
      ->Run<bool>("publish rendezvous", TxKind::kTransaction,
                  [&](pqxx::transaction_base& tx) -> absl::StatusOr<bool> {
                    pqxx::result r = tx.exec_params(R"sql(
                 UPDATE attempts t SET rendezvous = $2
                 FROM assignments s
                 WHERE s.token = $1 AND s.active AND s.rank = 0
                   AND t.job_id = s.job_id AND t.attempt = s.attempt AND t.state = 'RUNNING'
                 RETURNING t.job_id)sql",
                                                    attempt_token, address);
                    if (r.empty()) {
                      return absl::FailedPreconditionError(
                          "rendezvous: the token is not rank 0 of a running attempt (the attempt ended?)");
                    }
                    return true;
                  })
      .status();
}

absl::StatusOr<std::map<std::string, int64_t>> PgJobStore::CountWorkersByState() {
  return pool_->Run<std::map<std::string, int64_t>>(
      "count workers", TxKind::kSingleStatement,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::map<std::string, int64_t>> {
        std::map<std::string, int64_t> counts = {{"IDLE", 0}, {"BUSY", 0}, {"LOST", 0}};
        for (const pqxx::row& row : tx.exec("SELECT state, count(*) FROM workers GROUP BY state")) {
          counts[row[0].as<std::string>()] = row[1].as<int64_t>();
        }
        return counts;
      });
}

// ---- scheduling ----

absl::StatusOr<int> PgJobStore::ExpireLeases(int max_attempts) {
  return pool_->Run<int>(
      "expire leases", TxKind::kTransaction, [&](pqxx::transaction_base& tx) -> absl::StatusOr<int> {
        // now() is fixed for the whole transaction, so every statement below sees the same deadline.
        // Lock order: the affected jobs first (by id), then the workers.
        pqxx::result jobs = tx.exec(R"sql(
            SELECT id, attempts FROM jobs
            WHERE state = 'RUNNING' AND id IN (
              SELECT s.job_id FROM assignments s JOIN workers w ON w.id = s.worker_id
              WHERE s.active AND (w.state = 'LOST' OR w.lease_expires_at < now()))
            ORDER BY id
            FOR UPDATE)sql");
        tx.exec("UPDATE workers SET state = 'LOST' WHERE state <> 'LOST' AND lease_expires_at < now()");
        int ended = 0;
        for (const pqxx::row& job : jobs) {
          const std::string job_id = job[0].as<std::string>();
          const int64_t attempt = job[1].as<int64_t>();
          // Re-checked under the job lock: a heartbeat may have renewed the lease meanwhile.
          pqxx::result lost = tx.exec_params(R"sql(
              SELECT s.worker_id FROM assignments s JOIN workers w ON w.id = s.worker_id
              WHERE s.job_id = $1 AND s.attempt = $2 AND s.active AND w.state = 'LOST'
              ORDER BY s.rank LIMIT 1)sql",
                                             job_id, attempt);
          if (lost.empty()) continue;
          const std::string why =
              absl::StrCat("attempt ", attempt, " lost worker ", lost[0][0].as<std::string>());
          tx.exec_params(
              "UPDATE attempts SET state = 'LOST', error = $3, ended_at = now() "
              "WHERE job_id = $1 AND attempt = $2 AND state = 'RUNNING'",
              job_id, attempt, why + " (no heartbeat within its lease)");
          EndAssignments(tx, job_id, attempt);
          RequeueOrFail(tx, job_id, attempt, max_attempts, why);
          ++ended;
        }
        return ended;
      });
}

absl::StatusOr<std::string> PgJobStore::StartNextAttempt() {
  return pool_->Run<std::string>(
      "start next attempt", TxKind::kTransaction,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::string> {
        int64_t idle_cpu = 0, idle_gpu = 0;
        for (const pqxx::row& row :
             tx.exec("SELECT device_kind, count(*) FROM workers "
                     "WHERE state = 'IDLE' AND lease_expires_at > now() GROUP BY device_kind")) {
          (row[0].as<std::string>() == "GPU" ? idle_gpu : idle_cpu) = row[1].as<int64_t>();
        }
        if (idle_cpu == 0 && idle_gpu == 0) return std::string();
        // The oldest queued job that the idle workers can hold; SKIP LOCKED leaves a job another
        // coordinator is starting to that one.
        pqxx::result job = tx.exec_params(
            "SELECT id, ranks, device_kind, attempts FROM jobs "
            "WHERE state = 'QUEUED' AND ((device_kind = 'CPU' AND ranks <= $1) OR "
            "                            (device_kind = 'GPU' AND ranks <= $2)) "
            "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
            idle_cpu, idle_gpu);
        if (job.empty()) return std::string();
        const std::string job_id = job[0][0].as<std::string>();
        const int64_t ranks = job[0][1].as<int64_t>();
        const std::string device = job[0][2].as<std::string>();
        const int64_t attempt = job[0][3].as<int64_t>() + 1;
        pqxx::result workers = tx.exec_params(
            "SELECT id FROM workers WHERE state = 'IDLE' AND device_kind = $1 AND lease_expires_at > now() "
            "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            device, ranks);
        // Fewer than counted: another coordinator (or a heartbeat holding a row) got in between.
        // Nothing was changed; the caller tries again on its next tick.
        if (static_cast<int64_t>(workers.size()) < ranks) return std::string();

        tx.exec_params(
            "INSERT INTO attempts (job_id, attempt, state, world_size) VALUES ($1, $2, 'RUNNING', $3)",
            job_id, attempt, ranks);
        // One assignment per rank: rows of ($1 job, $2 attempt, token, rank, worker).
        std::vector<std::string> params;
        std::vector<std::string> rows;
        for (int64_t rank = 0; rank < ranks; ++rank) {
          const size_t base = 3 + params.size();
          rows.push_back(absl::StrCat("($", base, ", $1, $2, $", base + 1, "::integer, $", base + 2, ")"));
          BPNAS_ASSIGN_OR_RETURN(std::string token, RandomHex(16));
          params.push_back(std::move(token));
          params.push_back(std::to_string(rank));
          params.push_back(workers[rank][0].as<std::string>());
        }
        tx.exec_params(
            absl::StrCat("INSERT INTO assignments (token, job_id, attempt, rank, worker_id) VALUES ",
                         absl::StrJoin(rows, ", ")),
            job_id, attempt, pqxx::prepare::make_dynamic_params(params));
        tx.exec_params(
            "UPDATE workers SET state = 'BUSY' WHERE id IN "
            "(SELECT worker_id FROM assignments WHERE job_id = $1 AND attempt = $2)",
            job_id, attempt);
        tx.exec_params(
            "UPDATE jobs SET state = 'RUNNING', attempts = $2, phase = '', updated_at = now() WHERE id = $1",
            job_id, attempt);
        return job_id;
      });
}

// ---- progress ----

namespace {

// A PostgreSQL array literal of `items` ({"a","b"}), each element quoted with " and \ escaped.
std::string ArrayLiteral(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace

absl::StatusOr<std::vector<bool>> PgJobStore::AppendProgress(const std::vector<ProgressReport>& reports) {
  if (reports.empty()) return std::vector<bool>();
  // The hot path: one prepared statement (kAppendProgressSql, parsed and planned once per
  // connection) for the whole batch, i.e. one round trip and one commit. The batch travels as four
  // arrays: tokens, steps, phases, bodies (hex).
  const size_t n = reports.size();
  std::vector<std::string> tokens, steps, phases, bodies;
  tokens.reserve(n);
  steps.reserve(n);
  phases.reserve(n);
  bodies.reserve(n);
  for (const ProgressReport& report : reports) {
    tokens.push_back(report.attempt_token);
    steps.push_back(std::to_string(report.progress.step()));
    phases.push_back(report.progress.phase());
    std::string body;
    if (!report.progress.SerializeToString(&body)) return absl::InternalError("cannot serialize progress");
    bodies.push_back(absl::BytesToHexString(body));
  }
  const std::string a_tokens = ArrayLiteral(tokens), a_steps = ArrayLiteral(steps),
                    a_phases = ArrayLiteral(phases), a_bodies = ArrayLiteral(bodies);
  auto append = [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::vector<bool>> {
    pqxx::result r = tx.exec_prepared(kAppendProgressStatement, a_tokens, a_steps, a_phases, a_bodies);
    std::vector<bool> running(n, false);
    for (const pqxx::row& row : r) {
      const size_t idx = row[0].as<size_t>();
      if (idx < n) running[idx] = true;
    }
    return running;
  };
  return pool_->Run<std::vector<bool>>("append progress", TxKind::kSingleStatement, append);
}

absl::StatusOr<std::vector<Progress>> PgJobStore::ListProgress(const std::string& job_id,
                                                               ProgressCursor* cursor, int limit) {
  if (job_id.empty()) return absl::InvalidArgumentError("job id is empty");
  if (cursor == nullptr) return absl::InvalidArgumentError("cursor is null");
  if (limit < 1) return absl::InvalidArgumentError(absl::StrCat("limit must be positive, got ", limit));
  BPNAS_ASSIGN_OR_RETURN(
      std::vector<Progress> out,
      pool_->Run<std::vector<Progress>>(
          "list progress", TxKind::kSingleStatement,
          [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::vector<Progress>> {
            // The job row is there to tell "no such job" (no row) from "nothing new" (one null row).
            pqxx::result r =
                tx.exec_params(R"sql(
              SELECT p.attempt, p.step, floor(extract(epoch FROM p.reported_at) * 1000)::bigint, p.body
              FROM jobs j LEFT JOIN LATERAL (
                SELECT attempt, step, reported_at, body FROM progress
                WHERE job_id = j.id AND NOT superseded AND (attempt, step) > ($2::integer, $3::bigint)
                ORDER BY attempt, step
                LIMIT $4) p ON true
              WHERE j.id = $1)sql",
                               job_id, static_cast<int64_t>(cursor->attempt), cursor->step, limit);
            if (r.empty()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
            std::vector<Progress> rows;
            for (const pqxx::row& row : r) {
              if (row[0].is_null()) continue;
              BPNAS_ASSIGN_OR_RETURN(Progress progress,
                                     ProgressFromRow(job_id, row[0], row[1], row[2], row[3]));
              rows.push_back(std::move(progress));
            }
            return rows;
          }));
  // Advanced only once the rows are in hand (the transaction body may run more than once).
  if (!out.empty()) {
    cursor->attempt = out.back().attempt();
    cursor->step = out.back().step();
  }
  return out;
}

// ---- checkpoints and artifacts ----

absl::StatusOr<std::unique_ptr<BlobWriter>> PgJobStore::BeginBlob(const std::string& attempt_token,
                                                                  const char* kind, int64_t step) {
  if (attempt_token.empty()) return absl::InvalidArgumentError("attempt token is empty");
  BPNAS_ASSIGN_OR_RETURN(
      int64_t blob_id,
      pool_->Run<int64_t>(
          "begin blob", TxKind::kSingleStatement, [&](pqxx::transaction_base& tx) -> absl::StatusOr<int64_t> {
            pqxx::result r = tx.exec_params(
                "INSERT INTO blobs (kind, job_id, attempt, step) "
                "SELECT $2, job_id, attempt, $3 FROM assignments WHERE token = $1 AND active "
                "RETURNING id",
                attempt_token, kind, step);
            if (r.empty()) {
              return absl::FailedPreconditionError("the attempt token is not active (the attempt has ended)");
            }
            return r[0][0].as<int64_t>();
          }));
  return std::unique_ptr<BlobWriter>(
      new PgBlobWriter(pool_, blob_id, attempt_token, std::string_view(kind) == "CHECKPOINT"));
}

absl::StatusOr<std::unique_ptr<BlobWriter>> PgJobStore::BeginCheckpoint(const std::string& attempt_token,
                                                                        int64_t step) {
  return BeginBlob(attempt_token, "CHECKPOINT", step);
}

absl::StatusOr<std::unique_ptr<BlobWriter>> PgJobStore::BeginArtifact(const std::string& attempt_token) {
  return BeginBlob(attempt_token, "ARTIFACT", 0);
}

absl::StatusOr<std::unique_ptr<BlobReader>> PgJobStore::OpenLatestCheckpoint(
    const std::string& attempt_token) {
  if (attempt_token.empty()) return absl::InvalidArgumentError("attempt token is empty");
  return pool_->Run<std::unique_ptr<BlobReader>>(
      "open checkpoint", TxKind::kSingleStatement,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::unique_ptr<BlobReader>> {
        pqxx::result r = tx.exec_params(R"sql(
          SELECT s.active, s.job_id, b.id, b.sha256, b.total_bytes, b.step
          FROM assignments s LEFT JOIN LATERAL (
            SELECT id, sha256, total_bytes, step FROM blobs
            WHERE job_id = s.job_id AND kind = 'CHECKPOINT' AND complete
            ORDER BY attempt DESC, step DESC, id DESC
            LIMIT 1) b ON true
          WHERE s.token = $1)sql",
                                        attempt_token);
        if (r.empty() || !r[0][0].as<bool>()) {
          return absl::FailedPreconditionError("the attempt token is not active (the attempt has ended)");
        }
        if (r[0][2].is_null()) {
          return absl::NotFoundError(absl::StrCat("job ", r[0][1].as<std::string>(), " has no checkpoint"));
        }
        return std::unique_ptr<BlobReader>(new PgBlobReader(pool_, r[0][2].as<int64_t>(),
                                                            r[0][3].as<std::string>(), r[0][4].as<int64_t>(),
                                                            r[0][5].as<int64_t>()));
      });
}

absl::StatusOr<JobState> PgJobStore::CompleteAttempt(const std::string& attempt_token, bool succeeded,
                                                     const std::string& error, const SearchResult& result,
                                                     int64_t artifact_id, int max_attempts) {
  if (attempt_token.empty()) return absl::InvalidArgumentError("attempt token is empty");
  std::string result_bytes;
  if (succeeded && !result.SerializeToString(&result_bytes)) {
    return absl::InternalError("cannot serialize the search result");
  }
  return pool_->Run<JobState>(
      "complete attempt", TxKind::kTransaction, [&](pqxx::transaction_base& tx) -> absl::StatusOr<JobState> {
        const absl::Status ended =
            absl::FailedPreconditionError("the attempt token is not active (the attempt has already ended)");
        pqxx::result owner = tx.exec_params("SELECT job_id FROM assignments WHERE token = $1", attempt_token);
        if (owner.empty()) return ended;
        const std::string job_id = owner[0][0].as<std::string>();
        // Lock the job first (the lock order), then look at the assignment again: a concurrent
        // cancel or lease expiry may have ended it while this waited.
        tx.exec_params("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job_id);
        pqxx::result mine =
            tx.exec_params("SELECT attempt FROM assignments WHERE token = $1 AND active", attempt_token);
        if (mine.empty()) return ended;
        const int64_t attempt = mine[0][0].as<int64_t>();

        JobState state;
        if (succeeded) {
          pqxx::result blob = tx.exec_params(
              "SELECT 1 FROM blobs WHERE id = $1 AND kind = 'ARTIFACT' AND job_id = $2 AND complete",
              artifact_id, job_id);
          if (blob.empty()) {
            return absl::InvalidArgumentError(
                absl::StrCat("blob ", artifact_id, " is not a finished artifact of job ", job_id));
          }
          tx.exec_params(
              "UPDATE attempts SET state = 'SUCCEEDED', ended_at = now() WHERE job_id = $1 AND attempt = $2",
              job_id, attempt);
          tx.exec_params(
              "UPDATE jobs SET state = 'SUCCEEDED', result = $2, artifact_id = $3, error = '', updated_at = "
              "now() "
              "WHERE id = $1",
              job_id, pqxx::binarystring(result_bytes.data(), result_bytes.size()), artifact_id);
          state = bpnas::v1::SUCCEEDED;
        } else {
          const std::string why =
              absl::StrCat("attempt ", attempt, " failed: ", error.empty() ? "no reason given" : error);
          tx.exec_params(
              "UPDATE attempts SET state = 'FAILED', error = $3, ended_at = now() WHERE job_id = $1 AND "
              "attempt = $2",
              job_id, attempt, error);
          state = RequeueOrFail(tx, job_id, attempt, max_attempts, why);
        }
        EndAssignments(tx, job_id, attempt);
        return state;
      });
}

absl::StatusOr<std::unique_ptr<BlobReader>> PgJobStore::OpenArtifact(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job id is empty");
  return pool_->Run<std::unique_ptr<BlobReader>>(
      "open artifact", TxKind::kSingleStatement,
      [&](pqxx::transaction_base& tx) -> absl::StatusOr<std::unique_ptr<BlobReader>> {
        pqxx::result r = tx.exec_params(
            "SELECT j.state, b.id, b.sha256, b.total_bytes FROM jobs j "
            "LEFT JOIN blobs b ON b.id = j.artifact_id WHERE j.id = $1",
            job_id);
        if (r.empty()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
        const std::string state = r[0][0].as<std::string>();
        if (state != "SUCCEEDED") {
          return absl::FailedPreconditionError(
              absl::StrCat("job ", job_id, " is ", state, ": only a SUCCEEDED job has an artifact"));
        }
        if (r[0][1].is_null()) {
          return absl::InternalError(absl::StrCat("job ", job_id, " SUCCEEDED but has no artifact"));
        }
        return std::unique_ptr<BlobReader>(new PgBlobReader(
            pool_, r[0][1].as<int64_t>(), r[0][2].as<std::string>(), r[0][3].as<int64_t>(), /*step=*/0));
      });
}

// ---- health ----

absl::Status PgJobStore::CheckReady() {
  return pool_
      ->Run<bool>("check readiness", TxKind::kTransaction,
                  [&](pqxx::transaction_base& tx) -> absl::StatusOr<bool> {
                    if (tx.exec1("SELECT to_regclass('schema_migrations') IS NULL")[0].as<bool>()) {
                      return absl::FailedPreconditionError(
                          "the database has no schema_migrations table: "
                          "migrations have not been applied");
                    }
                    std::set<std::string> applied;
                    for (const pqxx::row& row : tx.exec("SELECT name FROM schema_migrations")) {
                      applied.insert(row[0].as<std::string>());
                    }
                    for (const Migration& m : EmbeddedMigrations()) {
                      if (!applied.count(m.name)) {
                        return absl::FailedPreconditionError(
                            absl::StrCat("migration ", m.name, " has not been applied"));
                      }
                    }
                    return true;
                  })
      .status();
}

}  // namespace bpnas
