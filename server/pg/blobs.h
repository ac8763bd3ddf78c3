// Blobs (checkpoints and artifacts) in PostgreSQL: a `blobs` row per blob and its bytes in
// `blob_chunks` rows of at most kMaxChunkRowBytes, written and read one chunk per transaction, so a
// blob of any size never sits whole in memory and a stream never pins a pooled connection.
//
// PgJobStore creates these (BeginCheckpoint / BeginArtifact, OpenLatestCheckpoint / OpenArtifact);
// nothing else should. The contracts are BlobWriter's and BlobReader's (server/job_store.h), plus:
// a writer refuses (FAILED_PRECONDITION) an Append or Finish once its attempt token is no longer
// active, and Finish of a checkpoint keeps the job's kCheckpointsKept newest complete checkpoints
// and deletes older ones. A Finish that failed (UNAVAILABLE) may be called again; if the first one
// did commit (its outcome was in doubt), the repeat returns the blob id. Not thread-safe (one stream each);
// the pool they share is.
#ifndef BPNAS_SERVER_PG_BLOBS_H_
#define BPNAS_SERVER_PG_BLOBS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "server/job_store.h"
#include "server/pg/pool.h"

namespace bpnas {

// The largest chunk row a blob writer stores: a bigger Append is split, so that a reader's Next()
// never returns more than this (it travels on in one gRPC message).
inline constexpr size_t kMaxChunkRowBytes = size_t{1} << 20;
// Complete checkpoints kept per job (the newest ones); older ones are deleted when a newer one
// finishes. Two, so that a reader that opened the previous one can still finish reading it.
inline constexpr int kCheckpointsKept = 2;

class PgBlobWriter : public BlobWriter {
 public:
  // Appends to the (incomplete) blob `blob_id`, as long as `token` is an active assignment.
  PgBlobWriter(std::shared_ptr<PgPool> pool, int64_t blob_id, std::string token, bool checkpoint);

  absl::Status Append(std::string_view data) override;
  absl::StatusOr<int64_t> Finish(const std::string& sha256_hex) override;
  int64_t bytes_written() const override { return bytes_; }

 private:
  std::shared_ptr<PgPool> pool_;
  const int64_t blob_id_;
  const std::string token_;
  const bool checkpoint_;
  int64_t next_seq_ = 0;
  int64_t bytes_ = 0;
  bool finished_ = false;
  Sha256 hash_;                        // incremental: a blob is checked without holding it
  std::optional<std::string> digest_;  // set by the first Finish
};

class PgBlobReader : public BlobReader {
 public:
  // Reads the complete blob `blob_id`, which holds `total_bytes` bytes with checksum `sha256`.
  // DATA_LOSS from Next() if the rows hold a different number of bytes (deleted meanwhile).
  PgBlobReader(std::shared_ptr<PgPool> pool, int64_t blob_id, std::string sha256, int64_t total_bytes,
               int64_t step);

  const std::string& sha256() const override { return sha256_; }
  int64_t total_bytes() const override { return total_bytes_; }
  int64_t step() const override { return step_; }
  absl::StatusOr<bool> Next(std::string* chunk) override;

 private:
  std::shared_ptr<PgPool> pool_;
  const int64_t blob_id_;
  const std::string sha256_;
  const int64_t total_bytes_;
  const int64_t step_;
  int64_t last_seq_ = -1;
  int64_t read_ = 0;
  bool done_ = false;
};

}  // namespace bpnas

#endif  // BPNAS_SERVER_PG_BLOBS_H_
