#include "server/pg/blobs.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace bpnas {
namespace {

absl::Status AttemptEnded() {
  return absl::FailedPreconditionError("the attempt token is no longer active (the attempt has ended)");
}

}  // namespace

PgBlobWriter::PgBlobWriter(std::shared_ptr<PgPool> pool, int64_t blob_id, std::string token, bool checkpoint)
    : pool_(std::move(pool)), blob_id_(blob_id), token_(std::move(token)), checkpoint_(checkpoint) {}

absl::Status PgBlobWriter::Append(std::string_view data) {
  if (digest_.has_value()) return absl::FailedPreconditionError("Append after Finish");
  if (data.empty()) return absl::OkStatus();
  std::vector<std::string_view> rows;
  for (size_t at = 0; at < data.size(); at += kMaxChunkRowBytes) {
    rows.push_back(data.substr(at, kMaxChunkRowBytes));
  }
  auto store = [&](pqxx::transaction_base& tx) -> absl::Status {
    for (size_t i = 0; i < rows.size(); ++i) {
      // The token check rides along with the insert: an ended attempt stores nothing more.
      pqxx::result r = tx.exec_params(
          "INSERT INTO blob_chunks (blob_id, seq, data) "
          "SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM assignments WHERE token = $4 AND active)",
          blob_id_, next_seq_ + static_cast<int64_t>(i), pqxx::binarystring(rows[i].data(), rows[i].size()),
          token_);
      if (r.affected_rows() == 0) return AttemptEnded();
    }
    return absl::OkStatus();
  };
  const TxKind kind = rows.size() == 1 ? TxKind::kSingleStatement : TxKind::kTransaction;
  BPNAS_RETURN_IF_ERROR(pool_->RunTransaction("store blob chunk", kind, store));
  next_seq_ += static_cast<int64_t>(rows.size());
  bytes_ += static_cast<int64_t>(data.size());
  hash_.Update(data);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> PgBlobWriter::Finish(const std::string& sha256_hex) {
  if (finished_) return absl::FailedPreconditionError("blob already finished");
  // Computed once: a Finish that failed (say UNAVAILABLE) may be called again.
  if (!digest_.has_value()) digest_ = hash_.HexDigest();
  const std::string& received = *digest_;
  if (absl::AsciiStrToLower(sha256_hex) != received) {
    return absl::DataLossError(absl::StrCat("checksum mismatch: the ", bytes_, " bytes received have sha256 ",
                                            received, ", the sender says ", sha256_hex));
  }
  absl::StatusOr<int64_t> id = pool_->Run<int64_t>(
      "finish blob", TxKind::kTransaction, [&](pqxx::transaction_base& tx) -> absl::StatusOr<int64_t> {
        // What the database holds must be what this writer sent (an Append that failed and was
        // not repeated would leave a hole).
        pqxx::row stored = tx.exec_params1(
            "SELECT coalesce(sum(length(data)), 0)::bigint, count(*) FROM blob_chunks WHERE blob_id = $1",
            blob_id_);
        if (stored[0].as<int64_t>() != bytes_ || stored[1].as<int64_t>() != next_seq_) {
          return absl::DataLossError(absl::StrCat(
              "blob ", blob_id_, " holds ", stored[0].as<int64_t>(), " bytes in ", stored[1].as<int64_t>(),
              " chunks; the writer sent ", bytes_, " bytes in ", next_seq_));
        }
        pqxx::result r = tx.exec_params(
            "UPDATE blobs SET complete = true, sha256 = $2, total_bytes = $3, completed_at = now() "
            "WHERE id = $1 AND NOT complete AND EXISTS "
            "(SELECT 1 FROM assignments WHERE token = $4 AND active) RETURNING job_id",
            blob_id_, received, bytes_, token_);
        if (r.empty()) {
          // A repeat of a Finish whose commit was in doubt finds the blob complete: that Finish
          // did take effect (the sizes were checked above, the checksum is this writer's).
          if (!tx.exec_params("SELECT 1 FROM blobs WHERE id = $1 AND complete", blob_id_).empty()) {
            return blob_id_;
          }
          return AttemptEnded();
        }
        if (checkpoint_) {
          tx.exec_params(R"sql(
            DELETE FROM blobs
            WHERE kind = 'CHECKPOINT' AND job_id = $1 AND complete AND id NOT IN (
              SELECT id FROM blobs
              WHERE kind = 'CHECKPOINT' AND job_id = $1 AND complete
              ORDER BY attempt DESC, step DESC, id DESC
              LIMIT $2))sql",
                         r[0][0].as<std::string>(), kCheckpointsKept);
        }
        return blob_id_;
      });
  if (id.ok()) finished_ = true;
  return id;
}

PgBlobReader::PgBlobReader(std::shared_ptr<PgPool> pool, int64_t blob_id, std::string sha256,
                           int64_t total_bytes, int64_t step)
    : pool_(std::move(pool)),
      blob_id_(blob_id),
      sha256_(std::move(sha256)),
      total_bytes_(total_bytes),
      step_(step) {}

absl::StatusOr<bool> PgBlobReader::Next(std::string* chunk) {
  if (done_) return false;
  auto read = [&](pqxx::transaction_base& tx) -> absl::StatusOr<bool> {
    pqxx::result r = tx.exec_params(
        "SELECT seq, data FROM blob_chunks WHERE blob_id = $1 AND seq > $2 ORDER BY seq LIMIT 1", blob_id_,
        last_seq_);
    if (r.empty()) return false;
    last_seq_ = r[0][0].as<int64_t>();
    pqxx::binarystring bytes(r[0][1]);
    chunk->assign(bytes.get(), bytes.size());
    return true;
  };
  BPNAS_ASSIGN_OR_RETURN(bool more, pool_->Run<bool>("read blob chunk", TxKind::kSingleStatement, read));
  if (more) {
    read_ += static_cast<int64_t>(chunk->size());
    if (read_ <= total_bytes_) return true;
  }
  done_ = true;
  if (read_ != total_bytes_) {
    return absl::DataLossError(absl::StrCat("blob ", blob_id_, " should hold ", total_bytes_, " bytes but ",
                                            read_, " were read (deleted meanwhile?)"));
  }
  return false;
}

}  // namespace bpnas
