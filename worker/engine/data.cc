#include "worker/engine/data.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "worker/engine/spec.h"

namespace bpnas {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kIdxImagesMagic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // unsigned byte, 1 dimension
constexpr int kMnistSide = 28;
constexpr int kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;  // 3072, channel-major
constexpr int64_t kCifarRecord = 1 + kCifarPixels;
constexpr int kFileClasses = 10;

// pixel / 255 for every byte value. A table rather than a division keeps the loop a plain gather
// and makes the values exactly float(p) / 255.0f whatever the vectorizer does.
const std::array<float, 256>& UnitScale() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = static_cast<float>(i) / 255.0f;
    return t;
  }();
  return table;
}

void ScaleBytes(const uint8_t* in, int64_t n, float* out) {
  const float* table = UnitScale().data();
  for (int64_t i = 0; i < n; ++i) out[i] = table[in[i]];
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads a whole file into memory; gzip-compressed files are inflated, others read as they are
// (zlib's gzread is transparent). The buffer grows with what is actually there, so a header that
// promises absurd sizes cannot make us allocate them.
absl::StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: is a folder, not a file"));
  }
  errno = 0;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int err = errno;
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open: ", err != 0 ? std::strerror(err) : "out of memory"));
  }
  std::unique_ptr<gzFile_s, int (*)(gzFile)> closer(file, &gzclose);
  gzbuffer(file, 1 << 18);

  std::vector<uint8_t> bytes;
  size_t chunk = 1 << 20;
  for (;;) {
    const size_t old_size = bytes.size();
    bytes.resize(old_size + chunk);
    const int n = gzread(file, bytes.data() + old_size, static_cast<unsigned>(chunk));
    if (n < 0) {
      int code = Z_OK;
      const char* what = gzerror(file, &code);
      if (code == Z_ERRNO) {
        return absl::DataLossError(absl::StrCat(path, ": read failed: ", std::strerror(errno)));
      }
      return absl::DataLossError(
          absl::StrCat(path, ": gzip stream is corrupt or truncated: ", what));
    }
    bytes.resize(old_size + static_cast<size_t>(n));
    if (n == 0) break;
    chunk = std::min<size_t>(chunk * 2, size_t{1} << 30);
  }
  // A gzip stream cut short still yields what was inflated; zlib only records the error.
  int code = Z_OK;
  const char* what = gzerror(file, &code);
  if (code != Z_OK) {
    return absl::DataLossError(
        absl::StrCat(path, ": gzip stream is corrupt or truncated: ", what));
  }
  return bytes;
}

// Checks the IDX magic and that the file holds exactly header + payload bytes. Returns the
// dimensions read from the header.
absl::StatusOr<std::vector<int64_t>> ParseIdxHeader(const std::string& path,
                                                    const std::vector<uint8_t>& bytes,
                                                    uint32_t magic, const char* kind) {
  const int dims = static_cast<int>(magic & 0xff);
  const size_t header_size = 4 + 4 * static_cast<size_t>(dims);
  if (bytes.size() < 4) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: file has ", bytes.size(),
                                            " bytes, an IDX ", kind, " header needs ",
                                            header_size));
  }
  const uint32_t got_magic = BigEndian32(bytes.data());
  if (got_magic != magic) {
    return absl::DataLossError(absl::StrFormat("%s: bad magic 0x%08x, expected 0x%08x (IDX %s)",
                                               path, got_magic, magic, kind));
  }
  if (bytes.size() < header_size) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: file has ", bytes.size(),
                                            " bytes, an IDX ", kind, " header needs ",
                                            header_size));
  }
  std::vector<int64_t> shape;
  // Each dimension < 2^32 and at most 3 of them: the product fits in unsigned __int128.
  unsigned __int128 expected = header_size;
  unsigned __int128 payload = 1;
  for (int d = 0; d < dims; ++d) {
    const uint32_t size = BigEndian32(bytes.data() + 4 + 4 * d);
    if (d > 0 && size == 0) {
      return absl::DataLossError(
          absl::StrCat(path, ": dimension ", d, " of the IDX ", kind, " header is 0"));
    }
    shape.push_back(size);
    payload *= size;
  }
  expected += payload;
  if (expected != bytes.size()) {
    const bool short_file = expected > bytes.size();
    const std::string promised =
        expected > std::numeric_limits<uint64_t>::max()
            ? std::string("more than 2^64")
            : absl::StrCat(static_cast<uint64_t>(expected));
    return absl::DataLossError(absl::StrCat(
        path, short_file ? ": truncated: " : ": trailing bytes: ", "header promises ", promised,
        " bytes, file has ", bytes.size()));
  }
  return shape;
}

// Turns anything LibTorch throws while allocating into a Status rather than letting it escape.
template <typename Fn>
auto GuardTorch(const std::string& what, Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

// Picks `dir`/`name` or `dir`/`name`.gz, whichever exists (the raw file when both do).
absl::StatusOr<std::string> FindMaybeGz(const std::string& dir, const std::string& name) {
  const std::string raw = (fs::path(dir) / name).string();
  const std::string gz = raw + ".gz";
  std::error_code ec;
  if (fs::is_regular_file(raw, ec)) return raw;
  if (fs::is_regular_file(gz, ec)) return gz;
  return absl::NotFoundError(absl::StrCat(gz, ": not found (nor ", raw, ")"));
}

absl::Status CheckLabelRange(const std::string& path, const torch::Tensor& labels, int classes) {
  const int64_t* data = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.size(0); ++i) {
    if (data[i] < 0 || data[i] >= classes) {
      return absl::DataLossError(absl::StrCat(path, ": label ", data[i], " at index ", i,
                                              " is out of range [0, ", classes, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Dataset> LoadMnistSplit(const std::string& dir, const std::string& prefix) {
  BPNAS_ASSIGN_OR_RETURN(std::string images_path,
                         FindMaybeGz(dir, prefix + "-images-idx3-ubyte"));
  BPNAS_ASSIGN_OR_RETURN(std::string labels_path,
                         FindMaybeGz(dir, prefix + "-labels-idx1-ubyte"));
  Dataset split;
  BPNAS_ASSIGN_OR_RETURN(split.images, ReadIdxImages(images_path));
  BPNAS_ASSIGN_OR_RETURN(split.labels, ReadIdxLabels(labels_path));
  if (split.images.size(0) != split.labels.size(0)) {
    return absl::DataLossError(absl::StrCat(images_path, " holds ", split.images.size(0),
                                            " images but ", labels_path, " holds ",
                                            split.labels.size(0), " labels"));
  }
  // The model graph is planned for 1x28x28 inputs (GeometryOf in spec.h); anything else would
  // only fail later, inside the first convolution.
  if (split.images.size(2) != kMnistSide || split.images.size(3) != kMnistSide) {
    return absl::DataLossError(absl::StrCat(images_path, ": images are ", split.images.size(2),
                                            "x", split.images.size(3), ", expected ",
                                            kMnistSide, "x", kMnistSide, " for an MNIST folder"));
  }
  BPNAS_RETURN_IF_ERROR(CheckLabelRange(labels_path, split.labels, kFileClasses));
  split.num_classes = kFileClasses;
  return split;
}

absl::StatusOr<Dataset> LoadCifarFiles(const std::vector<std::string>& paths) {
  std::vector<std::vector<uint8_t>> contents;
  int64_t records = 0;
  for (const std::string& path : paths) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      return absl::NotFoundError(absl::StrCat(path, ": cannot open: no such file"));
    }
    BPNAS_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
    if (bytes.empty() || bytes.size() % kCifarRecord != 0) {
      return absl::DataLossError(absl::StrCat(
          path, ": size ", bytes.size(), " is not a positive multiple of the ", kCifarRecord,
          "-byte CIFAR-10 record (", bytes.size() / kCifarRecord, " whole records + ",
          bytes.size() % kCifarRecord, " bytes)"));
    }
    records += static_cast<int64_t>(bytes.size()) / kCifarRecord;
    contents.push_back(std::move(bytes));
  }
  Dataset split;
  split.num_classes = kFileClasses;
  split.images = torch::empty({records, 3, kCifarSide, kCifarSide}, torch::kFloat);
  split.labels = torch::empty({records}, torch::kInt64);
  float* images = split.images.data_ptr<float>();
  int64_t* labels = split.labels.data_ptr<int64_t>();
  int64_t i = 0;
  for (size_t f = 0; f < contents.size(); ++f) {
    const std::vector<uint8_t>& bytes = contents[f];
    const int64_t n = static_cast<int64_t>(bytes.size()) / kCifarRecord;
    for (int64_t r = 0; r < n; ++r, ++i) {
      const uint8_t* record = bytes.data() + r * kCifarRecord;
      if (record[0] >= kFileClasses) {
        return absl::DataLossError(absl::StrCat(paths[f], ": label ", int{record[0]},
                                                " of record ", r, " is out of range [0, ",
                                                kFileClasses, ")"));
      }
      labels[i] = record[0];
      // The record's 3072 bytes are R, G, B planes of 32x32, row-major: already [C, H, W].
      ScaleBytes(record + 1, kCifarPixels, images + i * kCifarPixels);
    }
  }
  return split;
}

// splitmix64: turns the user's seed (often 0, 1, 2 ...) into well-spread generator seeds, one per
// stream, so the train set, the test set and the prototypes draw independent numbers.
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The standard distributions are implementation-defined; these are not, so a seed means the same
// data on every platform.
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n) {
  // Rejection sampling: unbiased.
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  const uint64_t limit = kMax - kMax % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

// One prototype per class: for every channel, stripes at a class-dependent angle plus a Gaussian
// blob at a random position, scaled to [0, 1]. Returns [classes][channels * size * size].
std::vector<std::vector<float>> MakePrototypes(int channels, int size, int classes,
                                               std::mt19937_64& rng) {
  constexpr double kPi = 3.14159265358979323846;
  const int64_t plane = int64_t{size} * size;
  std::vector<std::vector<float>> prototypes(classes, std::vector<float>(channels * plane));
  std::vector<double> pattern(plane);
  for (int c = 0; c < classes; ++c) {
    for (int ch = 0; ch < channels; ++ch) {
      const double angle = kPi * (c + 0.5 * Uniform01(rng)) / classes;
      const double cycles = 1.5 + 2.5 * Uniform01(rng);
      const double phase = 2 * kPi * Uniform01(rng);
      const double cx = size * (0.2 + 0.6 * Uniform01(rng));
      const double cy = size * (0.2 + 0.6 * Uniform01(rng));
      const double sigma = size * (0.1 + 0.15 * Uniform01(rng));
      double lo = std::numeric_limits<double>::infinity(), hi = -lo;
      for (int y = 0; y < size; ++y) {
        for (int x = 0; x < size; ++x) {
          const double t = (x * std::cos(angle) + y * std::sin(angle)) / size;
          const double stripe = 0.5 + 0.5 * std::sin(2 * kPi * cycles * t + phase);
          const double d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
          const double blob = std::exp(-d2 / (2 * sigma * sigma));
          const double v = 0.5 * stripe + 0.5 * blob;
          pattern[y * size + x] = v;
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
      }
      const double range = hi > lo ? hi - lo : 1.0;
      float* out = prototypes[c].data() + ch * plane;
      for (int64_t p = 0; p < plane; ++p) out[p] = static_cast<float>((pattern[p] - lo) / range);
    }
  }
  return prototypes;
}

Dataset MakeSyntheticSplit(const std::vector<std::vector<float>>& prototypes, int channels,
                           int size, int count, std::mt19937_64& rng) {
  const int classes = static_cast<int>(prototypes.size());
  const int64_t pixels = int64_t{channels} * size * size;
  Dataset split;
  split.num_classes = classes;
  split.images = torch::empty({count, channels, size, size}, torch::kFloat);
  split.labels = torch::empty({count}, torch::kInt64);
  int64_t* labels = split.labels.data_ptr<int64_t>();
  // Round-robin labels (class counts differ by at most one), then a Fisher-Yates shuffle.
  for (int i = 0; i < count; ++i) labels[i] = i % classes;
  for (int i = count - 1; i > 0; --i) std::swap(labels[i], labels[UniformBelow(rng, i + 1)]);
  float* images = split.images.data_ptr<float>();
  for (int i = 0; i < count; ++i) {
    const float* prototype = prototypes[labels[i]].data();
    float* out = images + i * pixels;
    for (int64_t p = 0; p < pixels; ++p) {
      const float noise = static_cast<float>(Uniform01(rng));
      out[p] = std::clamp(0.7f * prototype[p] + 0.3f * noise, 0.0f, 1.0f);
    }
  }
  return split;
}

void ApplyLimit(uint32_t limit, Dataset* split) {
  if (limit == 0 || int64_t{limit} >= split->size()) return;
  split->images = split->images.narrow(0, 0, limit).contiguous();
  split->labels = split->labels.narrow(0, 0, limit).contiguous();
}

}  // namespace

absl::StatusOr<torch::Tensor> ReadIdxImages(const std::string& path) {
  BPNAS_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  BPNAS_ASSIGN_OR_RETURN(std::vector<int64_t> shape,
                         ParseIdxHeader(path, bytes, kIdxImagesMagic, "images"));
  return GuardTorch(path, [&]() -> absl::StatusOr<torch::Tensor> {
    torch::Tensor images = torch::empty({shape[0], 1, shape[1], shape[2]}, torch::kFloat);
    ScaleBytes(bytes.data() + 16, images.numel(), images.data_ptr<float>());
    return images;
  });
}

absl::StatusOr<torch::Tensor> ReadIdxLabels(const std::string& path) {
  BPNAS_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  BPNAS_ASSIGN_OR_RETURN(std::vector<int64_t> shape,
                         ParseIdxHeader(path, bytes, kIdxLabelsMagic, "labels"));
  return GuardTorch(path, [&]() -> absl::StatusOr<torch::Tensor> {
    torch::Tensor labels = torch::empty({shape[0]}, torch::kInt64);
    int64_t* out = labels.data_ptr<int64_t>();
    const uint8_t* in = bytes.data() + 8;
    for (int64_t i = 0; i < shape[0]; ++i) out[i] = in[i];
    return labels;
  });
}

absl::StatusOr<DataSplits> LoadMnistFolder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no such folder (expected MNIST IDX files)"));
  }
  DataSplits splits;
  BPNAS_ASSIGN_OR_RETURN(splits.train, LoadMnistSplit(dir, "train"));
  BPNAS_ASSIGN_OR_RETURN(splits.test, LoadMnistSplit(dir, "t10k"));
  return splits;
}

absl::StatusOr<DataSplits> LoadCifar10Folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no such folder (expected CIFAR-10 binary batches)"));
  }
  std::vector<std::string> train_paths;
  for (int b = 1; b <= 5; ++b) {
    train_paths.push_back((fs::path(dir) / absl::StrCat("data_batch_", b, ".bin")).string());
  }
  const std::string test_path = (fs::path(dir) / "test_batch.bin").string();
  return GuardTorch(dir, [&]() -> absl::StatusOr<DataSplits> {
    DataSplits splits;
    BPNAS_ASSIGN_OR_RETURN(splits.train, LoadCifarFiles(train_paths));
    BPNAS_ASSIGN_OR_RETURN(splits.test, LoadCifarFiles({test_path}));
    return splits;
  });
}

DataSplits MakeSynthetic(int channels, int size, int classes, int train, int test, uint64_t seed) {
  std::mt19937_64 prototype_rng(SplitMix64(seed ^ 0x70726f746fULL));
  std::mt19937_64 train_rng(SplitMix64(seed ^ 0x747261696eULL));
  std::mt19937_64 test_rng(SplitMix64(seed ^ 0x74657374ULL));
  const auto prototypes = MakePrototypes(channels, size, classes, prototype_rng);
  DataSplits splits;
  splits.train = MakeSyntheticSplit(prototypes, channels, size, train, train_rng);
  splits.test = MakeSyntheticSplit(prototypes, channels, size, test, test_rng);
  return splits;
}

absl::StatusOr<DataSplits> LoadDataset(const bpnas::v1::DatasetSpec& spec, uint64_t seed) {
  DataSplits splits;
  // An empty kind or fashion-mnist path means the defaults NormalizeSpec would fill in.
  const std::string kind = spec.kind().empty() ? "fashion-mnist" : spec.kind();
  std::string dir = spec.path();
  if (kind == "fashion-mnist" && dir.empty()) dir = kDefaultFashionMnistDir;
  if ((kind == "mnist" || kind == "cifar10") && dir.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset.path: required for dataset.kind \"", kind, "\""));
  }
  if (kind == "fashion-mnist" || kind == "mnist") {
    BPNAS_ASSIGN_OR_RETURN(splits, LoadMnistFolder(dir));
  } else if (kind == "cifar10") {
    BPNAS_ASSIGN_OR_RETURN(splits, LoadCifar10Folder(dir));
  } else if (kind == "synthetic") {
    if (spec.synthetic_channels() < 1 || spec.synthetic_size() < 1 ||
        spec.synthetic_classes() < 1) {
      return absl::InvalidArgumentError(
          "dataset: synthetic_channels, synthetic_size and synthetic_classes must be >= 1 "
          "(normalize the spec first)");
    }
    BPNAS_ASSIGN_OR_RETURN(
        splits, GuardTorch("synthetic dataset", [&]() -> absl::StatusOr<DataSplits> {
          return MakeSynthetic(spec.synthetic_channels(), spec.synthetic_size(),
                               spec.synthetic_classes(), spec.synthetic_train(),
                               spec.synthetic_test(), seed);
        }));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset.kind: unknown kind \"", kind,
                     "\" (known: fashion-mnist, mnist, cifar10, synthetic)"));
  }
  ApplyLimit(spec.train_limit(), &splits.train);
  ApplyLimit(spec.test_limit(), &splits.test);
  return splits;
}

}  // namespace bpnas
