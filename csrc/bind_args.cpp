// Every native op's arguments, checked once: raw pointers, shapes, strides, dtype names and
// conv geometry from Python become the structs of op_args.h, or a one-line Python error
// naming the argument. The CPU and the CUDA bindings both build their arguments here.
#include "bind_args.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

namespace py = pybind11;

namespace summit {
namespace {

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::f32;
  if (name == "float16") return DType::f16;
  if (name == "bfloat16") return DType::bf16;
  if (name == "float64") return DType::f64;
  throw py::type_error("unsupported dtype '" + name + "': expected float32, float16, bfloat16 or float64");
}

PadMode parse_padding_mode(const std::string& name) {
  if (name == "zeros") return PadMode::zeros;
  if (name == "reflect") return PadMode::reflect;
  if (name == "replicate") return PadMode::replicate;
  if (name == "circular") return PadMode::circular;
  throw py::value_error("unknown padding_mode '" + name + "': expected zeros, reflect, replicate or circular");
}

View4 make_view(std::uintptr_t ptr, const std::string& dtype, const Shape4& shape, const Shape4& strides,
                const std::string& what) {
  if (!ptr) throw py::value_error(what + ": null data pointer");
  View4 v;
  v.data = reinterpret_cast<const void*>(ptr);
  v.dtype = parse_dtype(dtype);
  for (int d = 0; d < 4; ++d) {
    if (shape[d] < 1) throw py::value_error(what + ": every dimension must be >= 1");
    if (strides[d] < 0) throw py::value_error(what + ": negative strides are not supported");
    v.shape[d] = shape[d];
    v.stride[d] = strides[d];
  }
  return v;
}

// Label values are checked here when host code can read them; device labels are checked by
// the Python layer before the call.
const int64_t* checked_labels(std::uintptr_t ptr, int64_t batch, int64_t num_classes, bool on_host) {
  if (!ptr) throw py::value_error("labels: null data pointer");
  const int64_t* labels = reinterpret_cast<const int64_t*>(ptr);
  if (!on_host) return labels;
  for (int64_t b = 0; b < batch; ++b)
    if (labels[b] < 0 || labels[b] >= num_classes)
      throw py::value_error("labels: class index " + std::to_string(labels[b]) + " is out of range [0, " +
                            std::to_string(num_classes) + ")");
  return labels;
}

int32_t* checked_counts(std::uintptr_t ptr) {
  if (!ptr) throw py::value_error("counts: null data pointer");
  return reinterpret_cast<int32_t*>(ptr);
}

}  // namespace

ActivationArgs activation_args(std::uintptr_t acts, const std::string& dtype, const Shape4& shape,
                               const Shape4& strides, std::uintptr_t labels, std::uintptr_t counts, int64_t num_classes,
                               const std::string& rule, double tau, int64_t k, std::uintptr_t excluded,
                               std::uintptr_t max_out, std::uintptr_t argmax_out, bool labels_on_host) {
  ActivationArgs a;
  a.acts = make_view(acts, dtype, shape, strides, "activations");
  a.labels = checked_labels(labels, shape[0], num_classes, labels_on_host);
  a.counts = checked_counts(counts);
  a.num_classes = num_classes;
  if (rule == "topk") {
    if (k < 1) throw py::value_error("topk: k must be >= 1, got " + std::to_string(k));
    a.topk = true;
    a.k = k;
  } else if (rule == "mass") {
    if (!(tau > 0.0 && tau <= 1.0)) throw py::value_error("mass: tau must be in (0, 1], got " + std::to_string(tau));
    a.tau = tau;
  } else {
    throw py::value_error("unknown rule '" + rule + "': expected mass or topk");
  }
  a.excluded = reinterpret_cast<const uint8_t*>(excluded);
  if (!max_out != !argmax_out)
    throw py::value_error("maxima: give both the values and the positions pointer, or neither (0)");
  if (max_out && shape[2] * shape[3] > INT32_MAX)
    throw py::value_error("maxima: positions need a spatial grid of fewer than 2^31 positions");
  a.max_out = reinterpret_cast<float*>(max_out);
  a.argmax_out = reinterpret_cast<int64_t*>(argmax_out);
    return a;
}

InfluenceArgs influence_args(std::uintptr_t x, const std::string& dtype, const Shape4& shape, const Shape4& strides,
                             std::uintptr_t weight, const std::string& weight_dtype, const Shape4& weight_shape,
                             const Pair& stride, const Shape4& pad, const Pair& dilation, int64_t groups,
                             const std::string& padding_mode, int64_t spatial_stride, std::uintptr_t labels,
                             std::uintptr_t counts, const std::string& count_dtype, int64_t num_classes, int64_t k,
                             bool prune, bool labels_on_host) {
  InfluenceArgs a;
  a.x = make_view(x, dtype, shape, strides, "conv input");
  if (!weight) throw py::value_error("conv weight: null data pointer");
  if (weight_dtype != "float32" && weight_dtype != "float64")
    throw py::type_error("conv weight must be passed as contiguous float32 or float64, got " + weight_dtype);
  a.weight = reinterpret_cast<const void*>(weight);
  a.weight_f64 = weight_dtype == "float64";
  const int64_t c_in = shape[1], h = shape[2], w = shape[3];
  if (groups < 1 || c_in % groups || weight_shape[0] % groups || weight_shape[1] * groups != c_in)
    throw py::value_error("conv weight (" + std::to_string(weight_shape[0]) + ", " + std::to_string(weight_shape[1]) +
                          ", ...) with groups=" + std::to_string(groups) + " does not fit an input with " +
                          std::to_string(c_in) + " channels");
  if (weight_shape[0] < 1 || weight_shape[2] < 1 || weight_shape[3] < 1)
    throw py::value_error("conv weight: every dimension must be >= 1");
  if (std::min({stride[0], stride[1], dilation[0], dilation[1], spatial_stride}) < 1)
    throw py::value_error("stride, dilation and spatial_stride must be >= 1");
  if (std::min({pad[0], pad[1], pad[2], pad[3]}) < 0) throw py::value_error("padding must be >= 0");
  if (k < 1) throw py::value_error("influence k must be >= 1, got " + std::to_string(k));
  ConvGeometry& g = a.geo;
  g.mode = parse_padding_mode(padding_mode);
  // torch.nn.functional.pad's limits, which define what the padded input is.
  const bool reflect_too_wide = std::max(pad[2], pad[3]) >= h || std::max(pad[0], pad[1]) >= w;
  const bool circular_too_wide = std::max(pad[2], pad[3]) > h || std::max(pad[0], pad[1]) > w;
  if ((g.mode == PadMode::reflect && reflect_too_wide) || (g.mode == PadMode::circular && circular_too_wide))
    throw py::value_error(padding_mode + " padding of " + std::to_string(std::max({pad[0], pad[1], pad[2], pad[3]})) +
                          " is too wide for a " + std::to_string(h) + "x" + std::to_string(w) + " input");
  g.kh = weight_shape[2];
  g.kw = weight_shape[3];
  g.dil_h = dilation[0];
  g.dil_w = dilation[1];
  g.step_h = stride[0] * spatial_stride;
  g.step_w = stride[1] * spatial_stride;
  g.pad_left = pad[0];
  g.pad_right = pad[1];
  g.pad_top = pad[2];
  g.pad_bottom = pad[3];
  const int64_t nh = h + pad[2] + pad[3] - dilation[0] * (g.kh - 1) - 1;
  const int64_t nw = w + pad[0] + pad[1] - dilation[1] * (g.kw - 1) - 1;
  if (nh < 0 || nw < 0) throw py::value_error("the conv kernel's dilated extent does not fit the padded input");
  g.out_h = nh / g.step_h + 1;
  g.out_w = nw / g.step_w + 1;
  a.c_out = weight_shape[0];
  a.groups = groups;
  a.labels = checked_labels(labels, shape[0], num_classes, labels_on_host);
  if (count_dtype != "int32" && count_dtype != "int16")
    throw py::type_error("counts must be int32 or int16, got " + count_dtype);
  a.counts = checked_counts(counts);
  a.counts_int16 = count_dtype == "int16";
  a.num_classes = num_classes;
  a.k = k;
  a.prune = prune;
    return a;
}

}  // namespace summit
