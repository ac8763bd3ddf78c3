// The blob-streaming helpers (server/blob_stream.h) over in-memory readers and writers: the message
// shape of a sent blob, and what a received one is checked against.
#include "server/blob_stream.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bpnas/v1/service.pb.h"
#include "common/sha256.h"

namespace bpnas {
namespace {

using bpnas::v1::ArtifactChunk;
using bpnas::v1::CheckpointChunk;

class FakeReader : public BlobReader {
 public:
  explicit FakeReader(std::vector<std::string> chunks) : chunks_(std::move(chunks)) {}
  const std::string& sha256() const override { return sha_; }
  int64_t total_bytes() const override { return 0; }
  int64_t step() const override { return 0; }
  absl::StatusOr<bool> Next(std::string* chunk) override {
    if (next_ == chunks_.size()) return false;
    *chunk = chunks_[next_++];
    return true;
  }

 private:
  std::vector<std::string> chunks_;
  size_t next_ = 0;
  std::string sha_;
};

class FakeWriter : public BlobWriter {
 public:
  absl::Status Append(std::string_view data) override {
    bytes_.append(data);
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> Finish(const std::string& sha256_hex) override {
    if (sha256_hex != Sha256Hex(bytes_)) return absl::DataLossError("checksum mismatch");
    finished_ = true;
    return 7;
  }
  int64_t bytes_written() const override { return static_cast<int64_t>(bytes_.size()); }

  std::string bytes_;
  bool finished_ = false;
};

std::vector<ArtifactChunk> Send(std::vector<std::string> chunks, bool* ok = nullptr) {
  FakeReader reader(std::move(chunks));
  ArtifactChunk header;
  header.set_sha256("abc");
  header.set_total_bytes(42);
  std::vector<ArtifactChunk> sent;
  absl::Status s = SendBlob(
      &reader, header,
      [&](const ArtifactChunk& m) {
        sent.push_back(m);
        return true;
      },
      [] { return false; });
  if (ok != nullptr) *ok = s.ok();
  return sent;
}

TEST(SendBlob, TheHeaderRidesOnTheFirstChunkOnly) {
  bool ok = false;
  std::vector<ArtifactChunk> sent = Send({"ab", "cd", "e"}, &ok);
  EXPECT_TRUE(ok);
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0].sha256(), "abc");
  EXPECT_EQ(sent[0].total_bytes(), 42);
  EXPECT_EQ(sent[0].data(), "ab");
  EXPECT_EQ(sent[1].sha256(), "");
  EXPECT_EQ(sent[1].data(), "cd");
  EXPECT_EQ(sent[2].data(), "e");
}

TEST(SendBlob, AnEmptyBlobIsTheHeaderAlone) {
  std::vector<ArtifactChunk> sent = Send({});
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].sha256(), "abc");
  EXPECT_EQ(sent[0].data(), "");
}

TEST(SendBlob, AClientThatGoesAwayIsCancelled) {
  FakeReader reader({"ab", "cd"});
  int writes = 0;
  absl::Status s = SendBlob(
      &reader, ArtifactChunk(), [&](const ArtifactChunk&) { return ++writes < 1; }, [] { return false; });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  EXPECT_EQ(writes, 1);
}

// Feeds `first` then `rest` to ReceiveBlob.
absl::StatusOr<int64_t> Receive(const CheckpointChunk& first, std::vector<std::string> rest,
                                FakeWriter* writer, const std::string& sha, int64_t expected_bytes = -1) {
  size_t next = 0;
  return ReceiveBlob(
      first,
      [&](CheckpointChunk* m) {
        if (next == rest.size()) return false;
        *m = CheckpointChunk();
        m->set_data(rest[next++]);
        return true;
      },
      writer, sha, expected_bytes);
}

TEST(ReceiveBlob, AppendsEveryMessageAndFinishesWithTheSendersChecksum) {
  CheckpointChunk first;
  first.set_data("hello ");
  FakeWriter writer;
  auto id = Receive(first, {"wor", "ld"}, &writer, Sha256Hex("hello world"));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, 7);
  EXPECT_EQ(writer.bytes_, "hello world");
}

TEST(ReceiveBlob, AChecksumOfOtherBytesIsDataLoss) {
  CheckpointChunk first;
  first.set_data("hello");
  FakeWriter writer;
  auto id = Receive(first, {}, &writer, Sha256Hex("hullo"));
  EXPECT_EQ(id.status().code(), absl::StatusCode::kDataLoss) << id.status();
  EXPECT_FALSE(writer.finished_);
}

TEST(ReceiveBlob, AMissingOrMalformedChecksumIsInvalidAndNothingIsAppended) {
  for (const std::string& sha : {std::string(), std::string("abc"), std::string(64, 'g')}) {
    CheckpointChunk first;
    first.set_data("hello");
    FakeWriter writer;
    auto id = Receive(first, {}, &writer, sha);
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << sha;
    EXPECT_EQ(writer.bytes_, "") << sha;
  }
}

TEST(ReceiveBlob, FewerBytesThanAnnouncedIsDataLoss) {
  CheckpointChunk first;
  first.set_data("hello");
  FakeWriter writer;
  auto id = Receive(first, {}, &writer, Sha256Hex("hello"), /*expected_bytes=*/6);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kDataLoss) << id.status();
  EXPECT_FALSE(writer.finished_);
}

}  // namespace
}  // namespace bpnas
