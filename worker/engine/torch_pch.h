// Precompiled header for the LibTorch targets (see CMakeLists.txt). Only the API parts we use.
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/nn/functional.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>
