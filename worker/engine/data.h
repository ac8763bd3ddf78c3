// Data sets for the engine: IDX (MNIST / Fashion-MNIST, raw or .gz), CIFAR-10 binary batches, and a
// seeded synthetic set. Images come back as float tensors in [0, 1] (pixel / 255), [N, C, H, W];
// labels as int64 [N].
//
// Every failure names the file and what is wrong with it: NOT_FOUND for a missing file, DATA_LOSS
// for a corrupt one (bad magic, truncated, sizes that disagree, labels out of range).
#ifndef BPNAS_WORKER_ENGINE_DATA_H_
#define BPNAS_WORKER_ENGINE_DATA_H_

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "bpnas/v1/spec.pb.h"

namespace bpnas {

struct Dataset {
  torch::Tensor images;  // float32 [N, C, H, W] in [0, 1]
  torch::Tensor labels;  // int64 [N]
  int num_classes = 10;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct DataSplits {
  Dataset train;
  Dataset validation;  // empty unless dataset.validation_count > 0
  Dataset test;
};

// Reads an IDX image file (magic 0x00000803, uint8, [N, rows, cols]); `path` may end in .gz.
absl::StatusOr<torch::Tensor> ReadIdxImages(const std::string& path);
// Reads an IDX label file (magic 0x00000801, uint8, [N]); `path` may end in .gz.
absl::StatusOr<torch::Tensor> ReadIdxLabels(const std::string& path);

// MNIST-layout folder: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-... .
absl::StatusOr<DataSplits> LoadMnistFolder(const std::string& dir);
// CIFAR-10 binary folder: data_batch_1..5.bin, test_batch.bin (each record 1 label + 3072 bytes).
absl::StatusOr<DataSplits> LoadCifar10Folder(const std::string& dir);
// Seeded synthetic classification data: class c images carry a class-specific pattern plus noise,
// so a small network can learn it. Deterministic in `seed`.
DataSplits MakeSynthetic(int channels, int size, int classes, int train, int test, uint64_t seed);

// Loads what a (normalized) DatasetSpec names, applying train_limit / test_limit, then holding the
// last validation_count training images out as the validation split (INVALID_ARGUMENT if that
// leaves fewer than 2 training images).
absl::StatusOr<DataSplits> LoadDataset(const bpnas::v1::DatasetSpec& spec, uint64_t seed);

}  // namespace bpnas

#endif  // BPNAS_WORKER_ENGINE_DATA_H_
