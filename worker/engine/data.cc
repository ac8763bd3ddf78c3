#include "worker/engine/data.h"

#include <zlib.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "spec/spec.h"
#include "worker/engine/torch_guard.h"

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

// out[i] = in[i] / 255, exactly as float division rounds it (IEEE division is correctly
// rounded, so the vectorized loop gives the same bits as the scalar one; a multiply by 1/255 would
// not). Written as a plain loop so the compiler vectorizes it.
void ScaleBytes(const uint8_t* __restrict in, int64_t n, float* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]) / 255.0f;
}

// A fresh multi-megabyte tensor is written once, front to back. Faulting it in 4 KiB pages costs
// more than inflating the data on small VMs (each fault traps to the hypervisor), so ask for
// transparent huge pages. Only a hint: a no-op where THP is off or unsupported.
void AdviseHugePages(const torch::Tensor& tensor) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const auto start = reinterpret_cast<uintptr_t>(tensor.data_ptr());
  const uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (start + tensor.nbytes()) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)tensor;
#endif
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

constexpr size_t kChunkBytes = size_t{1} << 20;

// Sequential reader over a raw or gzip-compressed file: zlib's gzread inflates gzip and passes
// other files through unchanged. Files are streamed in chunks into their final tensors rather than
// read whole first: on small VMs page faults on a second 47 MB buffer cost more than inflating.
class GzFileReader {
 public:
  static absl::StatusOr<std::unique_ptr<GzFileReader>> Open(const std::string& path) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      return absl::NotFoundError(absl::StrCat(path, ": cannot open: is a folder, not a file"));
    }
    const uint64_t file_size = fs::file_size(path, ec);
    errno = 0;
    gzFile file = gzopen(path.c_str(), "rb");
    if (file == nullptr) {
      const int err = errno;
      return absl::NotFoundError(
          absl::StrCat(path, ": cannot open: ", err != 0 ? std::strerror(err) : "out of memory"));
    }
    gzbuffer(file, 1 << 18);
    auto reader = std::unique_ptr<GzFileReader>(new GzFileReader(path, file, ec ? 0 : file_size));
    reader->compressed_ = gzdirect(file) == 0;
    return reader;
  }
  ~GzFileReader() { gzclose(file_); }
  GzFileReader(const GzFileReader&) = delete;
  GzFileReader& operator=(const GzFileReader&) = delete;

  // Reads up to `n` bytes into `out`; fewer only at the end of the (decompressed) data.
  // DATA_LOSS for read errors and corrupt or cut-off gzip streams.
  absl::StatusOr<size_t> Read(uint8_t* out, size_t n) {
    size_t got = 0;
    while (got < n) {
      const unsigned want = static_cast<unsigned>(std::min<size_t>(n - got, size_t{1} << 30));
      const int r = gzread(file_, out + got, want);
      if (r < 0) return Error();
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    // A gzip stream cut short still yields what could be inflated; zlib only records the error.
    if (got < n) {
      int code = Z_OK;
      gzerror(file_, &code);
      if (code != Z_OK) return Error();
    }
    return got;
  }

  // Reads and discards the rest of the data; returns how many bytes that was.
  absl::StatusOr<uint64_t> CountRest() {
    std::vector<uint8_t> scratch(kChunkBytes);
    uint64_t total = 0;
    for (;;) {
      BPNAS_ASSIGN_OR_RETURN(size_t n, Read(scratch.data(), scratch.size()));
      total += n;
      if (n < scratch.size()) return total;
    }
  }

  bool compressed() const { return compressed_; }
  uint64_t file_size() const { return file_size_; }  // on disk

 private:
  GzFileReader(std::string path, gzFile file, uint64_t file_size)
      : path_(std::move(path)), file_(file), file_size_(file_size) {}

  absl::Status Error() {
    int code = Z_OK;
    const char* what = gzerror(file_, &code);
    if (code == Z_ERRNO) {
      return absl::DataLossError(absl::StrCat(path_, ": read failed: ", std::strerror(errno)));
    }
    return absl::DataLossError(absl::StrCat(
        path_, ": gzip stream is corrupt or truncated: ", what != nullptr ? what : "unknown zlib error"));
  }

  std::string path_;
  gzFile file_;
  uint64_t file_size_;
  bool compressed_ = false;
};

std::string SizeMismatch(const std::string& path, unsigned __int128 promised, uint64_t actual) {
  const std::string promised_text = promised > std::numeric_limits<uint64_t>::max()
                                        ? std::string("more than 2^64")
                                        : absl::StrCat(static_cast<uint64_t>(promised));
  return absl::StrCat(path, promised > actual ? ": truncated: " : ": trailing bytes: ", "header promises ",
                      promised_text, " bytes, file has ", actual);
}

// An IDX file whose header has been read and checked; the reader stands at the payload.
struct IdxFile {
  std::unique_ptr<GzFileReader> reader;
  std::vector<int64_t> shape;
  uint64_t header_size = 0;
  uint64_t payload_size = 0;
};

// Opens `path`, checks the magic (which also fixes the number of dimensions) and that the header
// is complete, and rejects sizes the file cannot hold before anything is allocated for them.
absl::StatusOr<IdxFile> OpenIdx(const std::string& path, uint32_t magic, const char* kind) {
  IdxFile idx;
  BPNAS_ASSIGN_OR_RETURN(idx.reader, GzFileReader::Open(path));
  const int dims = static_cast<int>(magic & 0xff);  // 1 or 3 for the magics above
  idx.header_size = 4 + 4 * static_cast<uint64_t>(dims);
  uint8_t header[4 + 4 * 3];  // IDX headers here have at most 3 dimensions
  BPNAS_ASSIGN_OR_RETURN(size_t got, idx.reader->Read(header, 4));
  if (got == 4) {
    const uint32_t got_magic = BigEndian32(header);
    if (got_magic != magic) {
      return absl::DataLossError(
          absl::StrFormat("%s: bad magic 0x%08x, expected 0x%08x (IDX %s)", path, got_magic, magic, kind));
    }
    BPNAS_ASSIGN_OR_RETURN(size_t more, idx.reader->Read(header + 4, idx.header_size - 4));
    got += more;
  }
  if (got < idx.header_size) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: file has ", got, " bytes, an IDX ", kind,
                                            " header needs ", idx.header_size));
  }
  // Each dimension is below 2^32 and images have 3: the product fits in 128 bits.
  unsigned __int128 payload = 1;
  for (int d = 0; d < dims; ++d) {
    const uint32_t size = BigEndian32(header + 4 + 4 * d);
    if (d > 0 && size == 0) {
      return absl::DataLossError(absl::StrCat(path, ": dimension ", d, " of the IDX ", kind, " header is 0"));
    }
    idx.shape.push_back(size);
    payload *= size;
  }
  const unsigned __int128 promised = idx.header_size + payload;
  if (!idx.reader->compressed()) {
    if (promised != idx.reader->file_size()) {
      return absl::DataLossError(SizeMismatch(path, promised, idx.reader->file_size()));
    }
  } else if (payload > 1100 * static_cast<unsigned __int128>(idx.reader->file_size()) + kChunkBytes) {
    // Deflate cannot expand beyond ~1032:1, so the stream cannot hold this much: refuse before
    // allocating for it, and count what it does hold for the message.
    BPNAS_ASSIGN_OR_RETURN(uint64_t rest, idx.reader->CountRest());
    return absl::DataLossError(SizeMismatch(path, promised, idx.header_size + rest));
  }
  idx.payload_size = static_cast<uint64_t>(payload);
  return idx;
}

// Streams the payload in chunks to `consume(bytes, count, offset)`, then checks that the file
// ended exactly where the header said.
absl::Status ReadIdxPayload(const std::string& path, IdxFile& idx,
                            const std::function<void(const uint8_t*, size_t, uint64_t)>& consume) {
  std::vector<uint8_t> chunk(std::min<uint64_t>(std::max<uint64_t>(idx.payload_size, 1), kChunkBytes));
  uint64_t offset = 0;
  while (offset < idx.payload_size) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(idx.payload_size - offset, chunk.size()));
    BPNAS_ASSIGN_OR_RETURN(size_t got, idx.reader->Read(chunk.data(), want));
    consume(chunk.data(), got, offset);
    offset += got;
    if (got < want) {
      return absl::DataLossError(
          SizeMismatch(path, idx.header_size + idx.payload_size, idx.header_size + offset));
    }
  }
  BPNAS_ASSIGN_OR_RETURN(uint64_t rest, idx.reader->CountRest());
  if (rest > 0) {
    return absl::DataLossError(
        SizeMismatch(path, idx.header_size + idx.payload_size, idx.header_size + idx.payload_size + rest));
  }
  return absl::OkStatus();
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
      return absl::DataLossError(
          absl::StrCat(path, ": label ", data[i], " at index ", i, " is out of range [0, ", classes, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Dataset> LoadMnistSplit(const std::string& dir, const std::string& prefix) {
  BPNAS_ASSIGN_OR_RETURN(std::string images_path, FindMaybeGz(dir, prefix + "-images-idx3-ubyte"));
  BPNAS_ASSIGN_OR_RETURN(std::string labels_path, FindMaybeGz(dir, prefix + "-labels-idx1-ubyte"));
  Dataset split;
  BPNAS_ASSIGN_OR_RETURN(split.images, ReadIdxImages(images_path));
  BPNAS_ASSIGN_OR_RETURN(split.labels, ReadIdxLabels(labels_path));
  if (split.images.size(0) != split.labels.size(0)) {
    return absl::DataLossError(absl::StrCat(images_path, " holds ", split.images.size(0), " images but ",
                                            labels_path, " holds ", split.labels.size(0), " labels"));
  }
  // The model graph is planned for 1x28x28 inputs (GeometryOf in spec.h); anything else would
  // only fail later, inside the first convolution.
  if (split.images.size(2) != kMnistSide || split.images.size(3) != kMnistSide) {
    return absl::DataLossError(absl::StrCat(images_path, ": images are ", split.images.size(2), "x",
                                            split.images.size(3), ", expected ", kMnistSide, "x", kMnistSide,
                                            " for an MNIST folder"));
  }
  BPNAS_RETURN_IF_ERROR(CheckLabelRange(labels_path, split.labels, kFileClasses));
  split.num_classes = kFileClasses;
  return split;
}

absl::StatusOr<Dataset> LoadCifarFiles(const std::vector<std::string>& paths) {
  // Sizes first, so the tensors are allocated once and nothing is read from a bad folder.
  std::vector<int64_t> records_in(paths.size());
  int64_t records = 0;
  for (size_t f = 0; f < paths.size(); ++f) {
    std::error_code ec;
    if (!fs::is_regular_file(paths[f], ec)) {
      return absl::NotFoundError(absl::StrCat(paths[f], ": cannot open: no such file"));
    }
    const uintmax_t size = fs::file_size(paths[f], ec);
    if (ec) return absl::NotFoundError(absl::StrCat(paths[f], ": cannot open: ", ec.message()));
    if (size == 0 || size % kCifarRecord != 0) {
      return absl::DataLossError(absl::StrCat(paths[f], ": size ", size,
                                              " is not a positive multiple of the ", kCifarRecord,
                                              "-byte CIFAR-10 record (", size / kCifarRecord,
                                              " whole records + ", size % kCifarRecord, " bytes)"));
    }
    records_in[f] = static_cast<int64_t>(size / kCifarRecord);
    records += records_in[f];
  }
  Dataset split;
  split.num_classes = kFileClasses;
  split.images = torch::empty({records, 3, kCifarSide, kCifarSide}, torch::kFloat);
  AdviseHugePages(split.images);
  split.labels = torch::empty({records}, torch::kInt64);
  float* images = split.images.data_ptr<float>();
  int64_t* labels = split.labels.data_ptr<int64_t>();
  constexpr int64_t kRecordsPerChunk = kChunkBytes / kCifarRecord;
  std::vector<uint8_t> chunk(kRecordsPerChunk * kCifarRecord);
  int64_t i = 0;
  for (size_t f = 0; f < paths.size(); ++f) {
    BPNAS_ASSIGN_OR_RETURN(std::unique_ptr<GzFileReader> reader, GzFileReader::Open(paths[f]));
    if (reader->compressed()) {
      return absl::DataLossError(
          absl::StrCat(paths[f], ": is gzip-compressed; expected a raw CIFAR-10 binary batch"));
    }
    for (int64_t r = 0; r < records_in[f];) {
      const int64_t n = std::min(kRecordsPerChunk, records_in[f] - r);
      BPNAS_ASSIGN_OR_RETURN(size_t got, reader->Read(chunk.data(), n * kCifarRecord));
      if (got != static_cast<size_t>(n * kCifarRecord)) {
        return absl::DataLossError(absl::StrCat(paths[f], ": truncated while reading (",
                                                r * kCifarRecord + got, " of ", records_in[f] * kCifarRecord,
                                                " bytes)"));
      }
      for (int64_t k = 0; k < n; ++k, ++r, ++i) {
        const uint8_t* record = chunk.data() + k * kCifarRecord;
        if (record[0] >= kFileClasses) {
          return absl::DataLossError(absl::StrCat(paths[f], ": label ", int{record[0]}, " of record ", r,
                                                  " is out of range [0, ", kFileClasses, ")"));
        }
        labels[i] = record[0];
        // The 3072 pixel bytes are the R, G, B planes of 32x32, row-major: already [C, H, W].
        ScaleBytes(record + 1, kCifarPixels, images + i * kCifarPixels);
      }
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
// draws with every standard library (the prototypes still go through libm's sin and exp).
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
std::vector<std::vector<float>> MakePrototypes(int channels, int size, int classes, std::mt19937_64& rng) {
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

Dataset MakeSyntheticSplit(const std::vector<std::vector<float>>& prototypes, int channels, int size,
                           int count, std::mt19937_64& rng) {
  const int classes = static_cast<int>(prototypes.size());
  const int64_t pixels = int64_t{channels} * size * size;
  Dataset split;
  split.num_classes = classes;
  split.images = torch::empty({count, channels, size, size}, torch::kFloat);
  AdviseHugePages(split.images);
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
  BPNAS_ASSIGN_OR_RETURN(IdxFile idx, OpenIdx(path, kIdxImagesMagic, "images"));
  return GuardTorch(path, [&]() -> absl::StatusOr<torch::Tensor> {
    torch::Tensor images = torch::empty({idx.shape[0], 1, idx.shape[1], idx.shape[2]}, torch::kFloat);
    AdviseHugePages(images);
    float* out = images.data_ptr<float>();
    BPNAS_RETURN_IF_ERROR(ReadIdxPayload(path, idx, [out](const uint8_t* bytes, size_t n, uint64_t offset) {
      ScaleBytes(bytes, static_cast<int64_t>(n), out + offset);
    }));
    return images;
  });
}

absl::StatusOr<torch::Tensor> ReadIdxLabels(const std::string& path) {
  BPNAS_ASSIGN_OR_RETURN(IdxFile idx, OpenIdx(path, kIdxLabelsMagic, "labels"));
  return GuardTorch(path, [&]() -> absl::StatusOr<torch::Tensor> {
    torch::Tensor labels = torch::empty({idx.shape[0]}, torch::kInt64);
    int64_t* out = labels.data_ptr<int64_t>();
    BPNAS_RETURN_IF_ERROR(ReadIdxPayload(path, idx, [out](const uint8_t* bytes, size_t n, uint64_t offset) {
      for (size_t i = 0; i < n; ++i) out[offset + i] = bytes[i];
    }));
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
    return absl::NotFoundError(absl::StrCat(dir, ": no such folder (expected CIFAR-10 binary batches)"));
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
    return absl::InvalidArgumentError(absl::StrCat("dataset.path: required for dataset.kind \"", kind, "\""));
  }
  if (kind == "fashion-mnist" || kind == "mnist") {
    BPNAS_ASSIGN_OR_RETURN(splits, LoadMnistFolder(dir));
  } else if (kind == "cifar10") {
    BPNAS_ASSIGN_OR_RETURN(splits, LoadCifar10Folder(dir));
  } else if (kind == "synthetic") {
    if (spec.synthetic_channels() < 1 || spec.synthetic_size() < 1 || spec.synthetic_classes() < 1) {
      return absl::InvalidArgumentError(
          "dataset: synthetic_channels, synthetic_size and synthetic_classes must be >= 1 "
          "(normalize the spec first)");
    }
    BPNAS_ASSIGN_OR_RETURN(splits, GuardTorch("synthetic dataset", [&]() -> absl::StatusOr<DataSplits> {
                             return MakeSynthetic(spec.synthetic_channels(), spec.synthetic_size(),
                                                  spec.synthetic_classes(), spec.synthetic_train(),
                                                  spec.synthetic_test(), seed);
                           }));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("dataset.kind: unknown kind \"", kind,
                                                   "\" (known: fashion-mnist, mnist, cifar10, synthetic)"));
  }
  return GuardTorch("dataset limits", [&]() -> absl::StatusOr<DataSplits> {
    ApplyLimit(spec.train_limit(), &splits.train);
    ApplyLimit(spec.test_limit(), &splits.test);
    const int64_t v = spec.validation_count();
    if (v > 0) {
      const int64_t n = splits.train.size();
      if (v > n - 2) {
        return absl::StatusOr<DataSplits>(absl::InvalidArgumentError(absl::StrCat(
            "dataset.validation_count: ", v, " of ", n, " training images leaves too few to train on")));
      }
      splits.validation = splits.train;
      splits.validation.images = splits.train.images.narrow(0, n - v, v);
      splits.validation.labels = splits.train.labels.narrow(0, n - v, v);
      splits.train.images = splits.train.images.narrow(0, 0, n - v);
      splits.train.labels = splits.train.labels.narrow(0, 0, n - v);
    }
    return absl::StatusOr<DataSplits>(std::move(splits));
  });
}

}  // namespace bpnas
