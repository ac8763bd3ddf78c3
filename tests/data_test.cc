// Tests for worker/engine/data.h: the IDX and CIFAR-10 readers on small files written here (raw
// and gzipped, valid and corrupt), the real Fashion-MNIST package when installed, the synthetic
// set and LoadDataset's dispatch and limits.
#include "worker/engine/data.h"

#include <stdlib.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace bpnas {
namespace {

namespace fs = std::filesystem;

// Passes when `text` contains `part`; prints both otherwise. (gtest only: the engine test binary
// does not link gmock.)
::testing::AssertionResult HasSubstr(absl::string_view text, absl::string_view part) {
  if (text.find(part) != absl::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

// A fresh folder per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::path(::testing::TempDir()) / "bpnas_data_test_XXXXXX").string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    const char* made = mkdtemp(buf.data());
    EXPECT_NE(made, nullptr) << "mkdtemp " << pattern;
    path_ = made != nullptr ? made : pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

using Bytes = std::vector<uint8_t>;

void PutBigEndian32(uint32_t v, Bytes* out) {
  out->push_back(static_cast<uint8_t>(v >> 24));
  out->push_back(static_cast<uint8_t>(v >> 16));
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

Bytes IdxImages(uint32_t n, uint32_t rows, uint32_t cols, uint32_t magic = 0x00000803) {
  Bytes b;
  PutBigEndian32(magic, &b);
  PutBigEndian32(n, &b);
  PutBigEndian32(rows, &b);
  PutBigEndian32(cols, &b);
  for (uint32_t i = 0; i < n * rows * cols; ++i) b.push_back(static_cast<uint8_t>((i * 37) % 256));
  return b;
}

Bytes IdxLabels(const std::vector<uint8_t>& labels, uint32_t magic = 0x00000801) {
  Bytes b;
  PutBigEndian32(magic, &b);
  PutBigEndian32(static_cast<uint32_t>(labels.size()), &b);
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

void WriteRaw(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void WriteGz(const std::string& path, const Bytes& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

Bytes ReadRaw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A complete MNIST-layout folder of 28x28 images with the given labels.
void WriteMnistFolder(const TempDir& dir, const std::vector<uint8_t>& train_labels,
                      const std::vector<uint8_t>& test_labels) {
  WriteGz(dir.File("train-images-idx3-ubyte.gz"),
          IdxImages(static_cast<uint32_t>(train_labels.size()), 28, 28));
  WriteGz(dir.File("train-labels-idx1-ubyte.gz"), IdxLabels(train_labels));
  WriteRaw(dir.File("t10k-images-idx3-ubyte"), IdxImages(static_cast<uint32_t>(test_labels.size()), 28, 28));
  WriteRaw(dir.File("t10k-labels-idx1-ubyte"), IdxLabels(test_labels));
}

TEST(IdxReader, ReadsRawAndGzipIdenticallyAndScalesToUnitRange) {
  TempDir dir;
  const Bytes images = IdxImages(5, 4, 3);
  const Bytes labels = IdxLabels({0, 9, 3, 3, 7});
  WriteRaw(dir.File("img"), images);
  WriteGz(dir.File("img.gz"), images);
  WriteRaw(dir.File("lbl"), labels);
  WriteGz(dir.File("lbl.gz"), labels);

  auto raw = ReadIdxImages(dir.File("img"));
  auto gz = ReadIdxImages(dir.File("img.gz"));
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_TRUE(gz.ok()) << gz.status();
  EXPECT_EQ(raw->sizes(), (std::vector<int64_t>{5, 1, 4, 3}));
  EXPECT_EQ(raw->scalar_type(), torch::kFloat);
  EXPECT_TRUE(raw->is_contiguous());
  EXPECT_TRUE(torch::equal(*raw, *gz));
  const float* values = raw->data_ptr<float>();
  for (int64_t i = 0; i < raw->numel(); ++i) {
    ASSERT_EQ(values[i], static_cast<float>(images[16 + i]) / 255.0f) << "pixel " << i;
  }
  EXPECT_EQ(raw->min().item<float>(), 0.0f);
  EXPECT_LE(raw->max().item<float>(), 1.0f);

  auto raw_labels = ReadIdxLabels(dir.File("lbl"));
  auto gz_labels = ReadIdxLabels(dir.File("lbl.gz"));
  ASSERT_TRUE(raw_labels.ok()) << raw_labels.status();
  ASSERT_TRUE(gz_labels.ok()) << gz_labels.status();
  EXPECT_EQ(raw_labels->scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(*raw_labels, torch::tensor({0, 9, 3, 3, 7}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(*raw_labels, *gz_labels));
}

TEST(IdxReader, BadMagicIsDataLossNamingFileAndMagic) {
  TempDir dir;
  const std::string path = dir.File("img");
  WriteRaw(path, IdxLabels({1, 2}));  // a label file where images are expected
  auto images = ReadIdxImages(path);
  EXPECT_EQ(images.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(images.status().message(), path));
  EXPECT_TRUE(HasSubstr(images.status().message(), "bad magic 0x00000801"));
  EXPECT_TRUE(HasSubstr(images.status().message(), "expected 0x00000803"));

  const std::string labels_path = dir.File("lbl.gz");
  WriteGz(labels_path, IdxImages(1, 2, 2));
  auto labels = ReadIdxLabels(labels_path);
  EXPECT_EQ(labels.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(labels.status().message(), labels_path));
  EXPECT_TRUE(HasSubstr(labels.status().message(), "magic"));
}

TEST(IdxReader, TruncatedPayloadIsDataLossWithPromisedAndActualSizes) {
  TempDir dir;
  Bytes images = IdxImages(5, 4, 3);  // 16 + 60 bytes
  images.resize(images.size() - 7);
  WriteRaw(dir.File("img"), images);
  auto status = ReadIdxImages(dir.File("img")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("img")));
  EXPECT_TRUE(HasSubstr(status.message(), "truncated: header promises 76 bytes, file has 69"));

  WriteRaw(dir.File("empty"), Bytes{});
  status = ReadIdxImages(dir.File("empty")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), "truncated: file has 0 bytes"));

  WriteGz(dir.File("lbl.gz"), Bytes{0, 0, 8, 1, 0, 0});  // magic, half a count
  status = ReadIdxLabels(dir.File("lbl.gz")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), "truncated"));
}

TEST(IdxReader, CutGzipStreamIsDataLoss) {
  TempDir dir;
  WriteGz(dir.File("full.gz"), IdxImages(200, 28, 28));
  Bytes gz = ReadRaw(dir.File("full.gz"));
  gz.resize(gz.size() / 2);
  WriteRaw(dir.File("cut.gz"), gz);
  auto status = ReadIdxImages(dir.File("cut.gz")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("cut.gz")));
  EXPECT_TRUE(HasSubstr(status.message(), "truncated"));
}

TEST(IdxReader, TrailingBytesAreDataLoss) {
  TempDir dir;
  Bytes labels = IdxLabels({1, 2, 3});
  labels.push_back(4);
  WriteRaw(dir.File("lbl"), labels);
  auto status = ReadIdxLabels(dir.File("lbl")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), "header promises 11 bytes, file has 12"));
}

TEST(IdxReader, MissingFileIsNotFoundNamingPath) {
  TempDir dir;
  const std::string path = dir.File("nope-idx3-ubyte.gz");
  auto status = ReadIdxImages(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(HasSubstr(status.message(), path));
  EXPECT_EQ(ReadIdxLabels(dir.path()).status().code(), absl::StatusCode::kNotFound);
}

TEST(MnistFolder, ReadsMixedRawAndGzipFiles) {
  TempDir dir;
  WriteMnistFolder(dir, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9}, {5, 4, 3});
  auto splits = LoadMnistFolder(dir.path());
  ASSERT_TRUE(splits.ok()) << splits.status();
  EXPECT_EQ(splits->train.images.sizes(), (std::vector<int64_t>{11, 1, 28, 28}));
  EXPECT_EQ(splits->test.images.sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_EQ(splits->train.size(), 11);
  EXPECT_EQ(splits->test.labels[2].item<int64_t>(), 3);
  EXPECT_EQ(splits->train.num_classes, 10);
}

TEST(MnistFolder, MissingFileIsNotFoundNamingExpectedPath) {
  TempDir dir;
  WriteMnistFolder(dir, {1, 2}, {3});
  fs::remove(dir.File("t10k-labels-idx1-ubyte"));
  auto status = LoadMnistFolder(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("t10k-labels-idx1-ubyte")));

  EXPECT_EQ(LoadMnistFolder(dir.File("no-such-folder")).status().code(), absl::StatusCode::kNotFound);
}

TEST(MnistFolder, ImageAndLabelCountMismatchIsDataLossNamingBothFiles) {
  TempDir dir;
  WriteMnistFolder(dir, {1, 2, 3}, {3});
  WriteGz(dir.File("train-labels-idx1-ubyte.gz"), IdxLabels({1, 2}));
  auto status = LoadMnistFolder(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("train-images-idx3-ubyte.gz")));
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("train-labels-idx1-ubyte.gz")));
  EXPECT_TRUE(HasSubstr(status.message(), "3 images"));
  EXPECT_TRUE(HasSubstr(status.message(), "2 labels"));
}

TEST(MnistFolder, LabelOutOfRangeIsDataLoss) {
  TempDir dir;
  WriteMnistFolder(dir, {1, 2, 3}, {3, 10});
  auto status = LoadMnistFolder(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("t10k-labels-idx1-ubyte")));
  EXPECT_TRUE(HasSubstr(status.message(), "label 10 at index 1"));
}

TEST(MnistFolder, ImagesThatAreNot28x28AreDataLoss) {
  TempDir dir;
  WriteMnistFolder(dir, {1, 2}, {3});
  WriteRaw(dir.File("t10k-images-idx3-ubyte"), IdxImages(1, 32, 32));
  auto status = LoadMnistFolder(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), "32x32"));
}

TEST(MnistFolder, ReadsTheRealFashionMnistPackage) {
  if (!fs::is_directory(kFashionMnistDir)) {
    GTEST_SKIP() << kFashionMnistDir << " missing (Debian package dataset-fashion-mnist)";
  }
  // Loading speed is measured by bpnas-bench (load_fashion_mnist), not asserted here.
  auto splits = LoadMnistFolder(kFashionMnistDir);
  ASSERT_TRUE(splits.ok()) << splits.status();

  for (const Dataset* split : {&splits->train, &splits->test}) {
    const int64_t n = split == &splits->train ? 60000 : 10000;
    EXPECT_EQ(split->images.sizes(), (std::vector<int64_t>{n, 1, 28, 28}));
    EXPECT_EQ(split->labels.sizes(), (std::vector<int64_t>{n}));
    EXPECT_EQ(split->images.scalar_type(), torch::kFloat);
    EXPECT_EQ(split->labels.scalar_type(), torch::kInt64);
    EXPECT_GE(split->images.min().item<float>(), 0.0f);
    EXPECT_LE(split->images.max().item<float>(), 1.0f);
    EXPECT_EQ(split->images.max().item<float>(), 1.0f);  // some pixel is 255
    EXPECT_EQ(split->num_classes, 10);
    const torch::Tensor counts = torch::bincount(split->labels, {}, 10);
    EXPECT_EQ(counts.numel(), 10);
    EXPECT_EQ(counts.min().item<int64_t>(), n / 10);  // Fashion-MNIST is exactly balanced
  }
}

Bytes CifarBatch(int records, uint8_t first_label) {
  Bytes b;
  for (int r = 0; r < records; ++r) {
    b.push_back(static_cast<uint8_t>((first_label + r) % 10));
    for (int p = 0; p < 3072; ++p) b.push_back(static_cast<uint8_t>((p + 7 * r) % 256));
  }
  return b;
}

void WriteCifarFolder(const TempDir& dir) {
  for (int b = 1; b <= 5; ++b) {
    WriteRaw(dir.File(absl::StrCat("data_batch_", b, ".bin")), CifarBatch(2, b));
  }
  WriteRaw(dir.File("test_batch.bin"), CifarBatch(2, 0));
}

TEST(Cifar10Folder, ReadsBatchesInChannelMajorOrder) {
  TempDir dir;
  WriteCifarFolder(dir);
  auto splits = LoadCifar10Folder(dir.path());
  ASSERT_TRUE(splits.ok()) << splits.status();
  EXPECT_EQ(splits->train.images.sizes(), (std::vector<int64_t>{10, 3, 32, 32}));
  EXPECT_EQ(splits->test.images.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_EQ(splits->train.labels.sizes(), (std::vector<int64_t>{10}));
  EXPECT_TRUE(torch::equal(splits->test.labels, torch::tensor({0, 1}, torch::kInt64)));
  // Batch 1 record 0 has label 1; batch 5 record 1 has label 6.
  EXPECT_EQ(splits->train.labels[0].item<int64_t>(), 1);
  EXPECT_EQ(splits->train.labels[9].item<int64_t>(), 6);
  // Record 1, byte p of the image (p = c*1024 + y*32 + x) is (p + 7) % 256.
  const torch::Tensor image = splits->test.images[1];
  EXPECT_EQ(image[0][0][0].item<float>(), 7.0f / 255.0f);
  EXPECT_EQ(image[1][0][0].item<float>(), static_cast<float>((1024 + 7) % 256) / 255.0f);
  EXPECT_EQ(image[2][1][3].item<float>(), static_cast<float>((2048 + 32 + 3 + 7) % 256) / 255.0f);
  EXPECT_EQ(splits->train.num_classes, 10);
}

TEST(Cifar10Folder, FileSizeNotAMultipleOfTheRecordIsDataLoss) {
  TempDir dir;
  WriteCifarFolder(dir);
  Bytes batch = CifarBatch(2, 0);
  batch.pop_back();
  WriteRaw(dir.File("data_batch_3.bin"), batch);
  auto status = LoadCifar10Folder(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("data_batch_3.bin")));
  EXPECT_TRUE(HasSubstr(status.message(), "3073"));
}

TEST(Cifar10Folder, LabelOutOfRangeIsDataLoss) {
  TempDir dir;
  WriteCifarFolder(dir);
  Bytes batch = CifarBatch(2, 0);
  batch[3073] = 10;  // record 1
  WriteRaw(dir.File("test_batch.bin"), batch);
  auto status = LoadCifar10Folder(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("test_batch.bin")));
  EXPECT_TRUE(HasSubstr(status.message(), "label 10 of record 1"));
}

TEST(Cifar10Folder, MissingBatchIsNotFound) {
  TempDir dir;
  WriteCifarFolder(dir);
  fs::remove(dir.File("data_batch_4.bin"));
  auto status = LoadCifar10Folder(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(HasSubstr(status.message(), dir.File("data_batch_4.bin")));
}

TEST(Synthetic, IsDeterministicInSeedAndDiffersAcrossSeeds) {
  const DataSplits a = MakeSynthetic(2, 12, 5, 100, 40, 7);
  const DataSplits b = MakeSynthetic(2, 12, 5, 100, 40, 7);
  const DataSplits c = MakeSynthetic(2, 12, 5, 100, 40, 8);
  EXPECT_EQ(a.train.images.sizes(), (std::vector<int64_t>{100, 2, 12, 12}));
  EXPECT_EQ(a.test.images.sizes(), (std::vector<int64_t>{40, 2, 12, 12}));
  EXPECT_EQ(a.train.labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(a.train.num_classes, 5);
  EXPECT_TRUE(torch::equal(a.train.images, b.train.images));
  EXPECT_TRUE(torch::equal(a.train.labels, b.train.labels));
  EXPECT_TRUE(torch::equal(a.test.images, b.test.images));
  EXPECT_TRUE(torch::equal(a.test.labels, b.test.labels));
  EXPECT_FALSE(torch::equal(a.train.images, c.train.images));
  EXPECT_FALSE(torch::equal(a.train.labels, c.train.labels));
}

TEST(Synthetic, IsInUnitRangeBalancedShuffledAndSeparable) {
  const DataSplits d = MakeSynthetic(1, 16, 4, 400, 200, 1);
  EXPECT_GE(d.train.images.min().item<float>(), 0.0f);
  EXPECT_LE(d.train.images.max().item<float>(), 1.0f);
  const torch::Tensor counts = torch::bincount(d.train.labels, {}, 4);
  EXPECT_EQ(counts.min().item<int64_t>(), 100);
  EXPECT_EQ(counts.max().item<int64_t>(), 100);
  // Not in round-robin order.
  EXPECT_FALSE(torch::equal(d.train.labels, torch::arange(400, torch::kInt64).remainder(4)));

  // A nearest-class-mean classifier fit on train must beat chance (25%) by far on test: the
  // classes carry real signal, so a small CNN can learn them.
  const torch::Tensor x_train = d.train.images.reshape({400, -1});
  const torch::Tensor x_test = d.test.images.reshape({200, -1});
  std::vector<torch::Tensor> means;
  for (int c = 0; c < 4; ++c) means.push_back(x_train.index({d.train.labels == c}).mean(0));
  const torch::Tensor centroids = torch::stack(means);              // [4, P]
  const torch::Tensor distances = torch::cdist(x_test, centroids);  // [200, 4]
  const double accuracy = distances.argmin(1).eq(d.test.labels).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(accuracy, 0.9);
}

TEST(LoadDataset, AppliesTrainAndTestLimitsToSynthetic) {
  bpnas::v1::DatasetSpec spec;
  spec.set_kind("synthetic");
  spec.set_synthetic_size(8);
  spec.set_synthetic_channels(3);
  spec.set_synthetic_classes(6);
  spec.set_synthetic_train(64);
  spec.set_synthetic_test(32);
  auto all = LoadDataset(spec, 3);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->train.size(), 64);
  EXPECT_EQ(all->test.size(), 32);
  EXPECT_EQ(all->train.num_classes, 6);
  EXPECT_TRUE(torch::equal(all->train.images, MakeSynthetic(3, 8, 6, 64, 32, 3).train.images));

  spec.set_train_limit(20);
  spec.set_test_limit(5);
  auto limited = LoadDataset(spec, 3);
  ASSERT_TRUE(limited.ok()) << limited.status();
  EXPECT_EQ(limited->train.images.sizes(), (std::vector<int64_t>{20, 3, 8, 8}));
  EXPECT_EQ(limited->test.labels.sizes(), (std::vector<int64_t>{5}));
  EXPECT_TRUE(limited->train.images.is_contiguous());
  EXPECT_TRUE(torch::equal(limited->train.images, all->train.images.narrow(0, 0, 20)));
  EXPECT_TRUE(torch::equal(limited->test.labels, all->test.labels.narrow(0, 0, 5)));

  spec.set_train_limit(1000);  // more than there is: everything
  spec.set_test_limit(0);      // 0: everything
  auto loose = LoadDataset(spec, 3);
  ASSERT_TRUE(loose.ok()) << loose.status();
  EXPECT_EQ(loose->train.size(), 64);
  EXPECT_EQ(loose->test.size(), 32);
}

TEST(LoadDataset, DispatchesFileKindsAndAppliesLimits) {
  TempDir mnist;
  WriteMnistFolder(mnist, {1, 2, 3, 4}, {5, 6, 7});
  bpnas::v1::DatasetSpec spec;
  spec.set_kind("mnist");
  spec.set_path(mnist.path());
  spec.set_train_limit(2);
  auto splits = LoadDataset(spec, 1);
  ASSERT_TRUE(splits.ok()) << splits.status();
  EXPECT_EQ(splits->train.size(), 2);
  EXPECT_EQ(splits->test.size(), 3);
  EXPECT_EQ(splits->train.num_classes, 10);

  TempDir cifar;
  WriteCifarFolder(cifar);
  spec.set_kind("cifar10");
  spec.set_path(cifar.path());
  spec.set_test_limit(1);
  splits = LoadDataset(spec, 1);
  ASSERT_TRUE(splits.ok()) << splits.status();
  EXPECT_EQ(splits->train.images.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_EQ(splits->test.size(), 1);

  spec.set_kind("imagenet");
  EXPECT_EQ(LoadDataset(spec, 1).status().code(), absl::StatusCode::kInvalidArgument);
  spec.set_kind("cifar10");
  spec.set_path(mnist.File("missing"));
  EXPECT_EQ(LoadDataset(spec, 1).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace bpnas
