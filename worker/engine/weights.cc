#include "worker/engine/weights.h"

#include <fstream>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/engine/data_parallel.h"
#include "worker/engine/search.h"

namespace bpnas {
absl::Status SaveWeights(const Supernet& net, const std::string& path) {
  try {
    torch::serialize::OutputArchive archive;
    for (const auto& p : net->named_parameters()) {
      if (!SupernetImpl::IsArchitectureParameterName(p.key())) archive.write(p.key(), p.value().detach());
    }
    for (const auto& b : net->named_buffers()) archive.write(b.key(), b.value(), /*is_buffer=*/true);
    const std::string tmp = path + ".tmp";
    archive.save_to(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      return absl::InternalError(absl::StrCat(path, ": cannot move ", tmp, " into place"));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(path, ": cannot write weights: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::Status LoadWeights(Supernet& net, const std::string& path) {
  if (!std::ifstream(path).good())
    return absl::NotFoundError(absl::StrCat(path, ": cannot open weights file"));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    return absl::DataLossError(
        absl::StrCat(path, ": not a bpnas weights file: ", e.what_without_backtrace()));
  }
  torch::NoGradGuard guard;
  auto load = [&](const std::string& name, torch::Tensor& target, bool is_buffer) -> absl::Status {
    torch::Tensor value;
    if (!archive.try_read(name, value, is_buffer)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": has no tensor \"", name, "\" (weights of another model?)"));
    }
    if (value.sizes() != target.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", name, "\" has shape ",
                                                     c10::str(value.sizes()), ", the model needs ",
                                                     c10::str(target.sizes()), " (another width?)"));
    }
    target.copy_(value);
    return absl::OkStatus();
  };
  for (auto& p : net->named_parameters()) {
    if (SupernetImpl::IsArchitectureParameterName(p.key())) continue;
    absl::Status s = load(p.key(), p.value(), false);
    if (!s.ok()) return s;
  }
  for (auto& b : net->named_buffers()) {
    absl::Status s = load(b.key(), b.value(), true);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<double> PretrainFp32(const JobPlan& plan, const DataSplits& data, int epochs, double lr,
                                    Supernet* out, const RunOptions& options) {
  try {
    QuantOptions q = QuantOptionsFor(plan.spec);
    q.quantize = false;
    torch::manual_seed(plan.spec.seed());
    Supernet net(plan.graph, q);
    BPNAS_RETURN_IF_ERROR(TrainWeightsOnly(net, plan.spec, data.train, epochs, lr, "pretrain", options));
    const double test = Evaluate(net, data.test);
    *out = net;
    return test;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("pretraining failed in LibTorch: ", e.what_without_backtrace()));
  }
}

}  // namespace bpnas
