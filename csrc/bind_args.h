// Checked construction of the ops' arguments (op_args.h) from what Python passes.
#pragma once
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <string>

#include "op_args.h"

namespace summit {

using Shape4 = std::array<int64_t, 4>;
using Pair = std::array<int64_t, 2>;

// labels_on_host: the labels pointer is host memory, so its values are checked here too.
ActivationArgs activation_args(std::uintptr_t acts, const std::string& dtype, const Shape4& shape,
                               const Shape4& strides, std::uintptr_t labels, std::uintptr_t counts, int64_t num_classes,
                               const std::string& rule, double tau, int64_t k, std::uintptr_t excluded,
                               std::uintptr_t max_out, std::uintptr_t argmax_out, bool labels_on_host);

InfluenceArgs influence_args(std::uintptr_t x, const std::string& dtype, const Shape4& shape, const Shape4& strides,
                             std::uintptr_t weight, const std::string& weight_dtype, const Shape4& weight_shape,
                             const Pair& stride, const Shape4& pad, const Pair& dilation, int64_t groups,
                             const std::string& padding_mode, int64_t spatial_stride, std::uintptr_t labels,
                             std::uintptr_t counts, const std::string& count_dtype, int64_t num_classes, int64_t k,
                             bool prune, bool labels_on_host);

}  // namespace summit
