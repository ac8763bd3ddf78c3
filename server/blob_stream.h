// Blob streaming between a gRPC stream and the store, the one shape that every artifact and
// checkpoint transfer shares (FetchArtifact, FetchCheckpoint, UploadCheckpoint, CompleteAttempt).
//
// Out (store -> client): the first message is a header (checksum, size, step) with the first
// chunk; the others carry only data; an empty blob is the header alone.
//
//   ArtifactChunk header;
//   header.set_sha256(reader->sha256());
//   absl::Status s = SendBlob(reader.get(), header,
//                             [&](const ArtifactChunk& m) { return writer->Write(m); },
//                             [&] { return ctx->IsCancelled(); });
//
// In (client -> store): the data of the first message (already read, it names the attempt) and of
// every later one is appended to a BlobWriter, which is finished with the checksum the sender
// computed over the bytes it sent. The store hashes what it received: the two can differ, and
// then nothing becomes visible.
//
// Messages are any protobuf with a `bytes data` field. Plain functions over callables, so the
// logic runs without gRPC in tests.
#ifndef BPNAS_SERVER_BLOB_STREAM_H_
#define BPNAS_SERVER_BLOB_STREAM_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/job_store.h"

namespace bpnas {

// OK if `sha256` is a SHA-256 in hex (64 digits, either case); INVALID_ARGUMENT naming `field`
// otherwise.
inline absl::Status CheckSha256Hex(const char* field, const std::string& sha256) {
  if (sha256.size() != 64 || sha256.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": the sender's SHA-256 of the whole blob, 64 hex digits, is required"));
  }
  return absl::OkStatus();
}

// Sends the blob `reader` reads, chunk by chunk, through `write` (bool(const Message&): false
// when the stream is gone). `cancelled` (bool()) is asked before each chunk. Returns OK once every
// chunk was written, CANCELLED if the client went away, or the reader's error.
template <typename Message, typename Write, typename Cancelled>
absl::Status SendBlob(BlobReader* reader, const Message& header, Write&& write, Cancelled&& cancelled) {
  std::string chunk;
  bool sent = false;
  for (;;) {
    if (cancelled()) return absl::CancelledError("the client went away");
    BPNAS_ASSIGN_OR_RETURN(bool more, reader->Next(&chunk));
    if (!more && sent) return absl::OkStatus();
    Message msg = sent ? Message() : header;
    if (more) msg.set_data(std::move(chunk));
    if (!write(msg)) return absl::CancelledError("the client went away");
    sent = true;
    if (!more) return absl::OkStatus();
  }
}

// Appends the data of `first` and then of each message `read` (bool(Message*): false at the end of
// the stream) produces to `writer`, and finishes the blob with `sender_sha256`, the sender's
// checksum of the whole blob. Returns the blob id, or:
//   INVALID_ARGUMENT  sender_sha256 is not 64 hex digits (nothing is read or stored; callers check
//                     it with CheckSha256Hex before they begin the blob);
//   DATA_LOSS         expected_bytes >= 0 and a different number of bytes arrived, or the bytes
//                     received do not hash to sender_sha256; the blob stays invisible;
//   the writer's errors (FAILED_PRECONDITION once the attempt has ended, UNAVAILABLE, ...).
template <typename Message, typename Read>
absl::StatusOr<int64_t> ReceiveBlob(const Message& first, Read&& read, BlobWriter* writer,
                                    const std::string& sender_sha256, int64_t expected_bytes = -1) {
  BPNAS_RETURN_IF_ERROR(CheckSha256Hex("sha256", sender_sha256));
  Message msg = first;
  do {
    if (!msg.data().empty()) BPNAS_RETURN_IF_ERROR(writer->Append(msg.data()));
  } while (read(&msg));
  if (expected_bytes >= 0 && writer->bytes_written() != expected_bytes) {
    return absl::DataLossError(
        absl::StrCat("the blob arrived damaged: ", writer->bytes_written(), " bytes of ", expected_bytes));
  }
  return writer->Finish(sender_sha256);
}

}  // namespace bpnas

#endif  // BPNAS_SERVER_BLOB_STREAM_H_
