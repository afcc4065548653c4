// Checks of the CPU execution layer for CUDA kernels (csrc/cuda/emulation.h): each kernel
// below uses one group of CUDA builtins, and main() compares with what CUDA defines.
// Built and run by python_tests/test_cuda_emulation.py; prints one "ok NAME" line per check.
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/runtime.cuh"

using summit::cuda_emulated::launch;
using summit::cuda_emulated::Stream;

namespace {

int failures = 0;
void expect(bool ok, const std::string& name) {
  std::printf("%s %s\n", ok ? "ok" : "FAIL", name.c_str());
  failures += !ok;
}

// Block sum through shared memory: every thread adds its index; tree reduction with barriers.
__global__ void block_sum(const int* in, int* out) {
  __shared__ int partial[256];
  const unsigned t = threadIdx.x;
  partial[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) partial[t] += partial[t + half];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

// Warp builtins: down-reduction, xor butterfly, broadcast, inclusive up-scan, ballot, any/all.
__global__ void warp_ops(int* out) {
  const int lane = threadIdx.x % warpSize;
  const unsigned full = 0xffffffffu;
  int down = lane;
  for (int d = 16; d > 0; d /= 2) down += __shfl_down_sync(full, down, d);
  float butterfly = static_cast<float>(lane);
  for (int d = 16; d > 0; d /= 2) butterfly = fmaxf(butterfly, __shfl_xor_sync(full, butterfly, d));
  const long long broadcast = __shfl_sync(full, 1000LL + lane, 7);
  int scan = 1;
  for (int d = 1; d < warpSize; d *= 2) {
    const int other = __shfl_up_sync(full, scan, d);
    if (lane >= d) scan += other;
  }
  const unsigned odd = __ballot_sync(full, lane & 1);
  const int any_big = __any_sync(full, lane == 31), all_small = __all_sync(full, lane < 31);
  const int base = (blockIdx.x * blockDim.x + threadIdx.x) * 7;
  out[base + 0] = down;  // lane 0: 0 + 1 + ... + 31 = 496
  out[base + 1] = static_cast<int>(butterfly);
  out[base + 2] = static_cast<int>(broadcast);
  out[base + 3] = scan;
  out[base + 4] = static_cast<int>(odd);
  out[base + 5] = any_big;
  out[base + 6] = all_small;
}

__global__ void atomics(int* count, unsigned long long* wide, float* total, int* biggest) {
  const int t = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(count, 1);
  atomicAdd(wide, 1ull << 33);
  atomicAdd(total, 0.5f);
  atomicMax(biggest, t);
}

__global__ void indices(int* out) {
  const unsigned t = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  const unsigned b = blockIdx.x + blockIdx.y * gridDim.x;
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = static_cast<int>(b * 1000 + t);
}

__global__ void divergent_barrier() {
  if (threadIdx.x < 40) __syncthreads();  // the other warps leave: fine; but lanes 40..63 of
  else __syncwarp();                      // warp 1 wait at a warp barrier: a deadlock
}

__global__ void partial_mask(int* out) { out[threadIdx.x] = __shfl_sync(0xffffu, 1, 0); }

__global__ void early_return(int* out) {
  if (threadIdx.x >= 48) return;  // returned threads do not hold up __syncthreads
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void half_types(const __half* h, const __nv_bfloat16* b, float* out) {
  out[threadIdx.x] = summit::cuda_emulated::load_float(h + threadIdx.x) +
                     summit::cuda_emulated::load_float(b + threadIdx.x);
}

template <class F>
bool throws(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return std::string(e.what()).find(needle) != std::string::npos;
  }
  return false;
}

}  // namespace

int main() {
  const Stream stream = nullptr;
  {
    std::vector<int> in(3 * 256), out(3);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i);
    launch(block_sum, dim3(3), dim3(256), stream, in.data(), out.data());
    expect(out[0] == 255 * 256 / 2 && out[2] == (767 * 768 - 511 * 512) / 2, "block_sum");
  }
  {
    std::vector<int> out(2 * 64 * 7);
    launch(warp_ops, dim3(2), dim3(64), stream, out.data());
    bool ok = true;
    for (int t = 0; t < 128; ++t) {
      const int lane = t % 32, *o = &out[t * 7];
      int expected_down = 0;  // lane L sums lanes L, L+1, ... as far as each step's source exists
      {
        int v[32];
        for (int l = 0; l < 32; ++l) v[l] = l;
        for (int d = 16; d > 0; d /= 2) {
          int next[32];
          for (int l = 0; l < 32; ++l) next[l] = v[l] + (l + d < 32 ? v[l + d] : v[l]);
          for (int l = 0; l < 32; ++l) v[l] = next[l];
        }
        expected_down = v[lane];
      }
      ok = ok && o[0] == expected_down && o[1] == 31 && o[2] == 1007 && o[3] == lane + 1 &&
           static_cast<unsigned>(o[4]) == 0xaaaaaaaau && o[5] == 1 && o[6] == 0;
    }
    expect(ok, "warp_ops");
  }
  {
    int count = 0, biggest = -1;
    unsigned long long wide = 0;
    float total = 0;
    launch(atomics, dim3(5), dim3(96), stream, &count, &wide, &total, &biggest);
    expect(count == 480 && wide == 480ull << 33 && total == 240.0f && biggest == 479, "atomics");
  }
  {
    std::vector<int> out(6 * 24, -1);
    launch(indices, dim3(3, 2), dim3(4, 3, 2), stream, out.data());
    bool ok = true;
    for (int b = 0; b < 6; ++b)
      for (int t = 0; t < 24; ++t) ok = ok && out[b * 24 + t] == b * 1000 + t;
    expect(ok, "indices");
  }
  expect(throws([&] { launch(divergent_barrier, dim3(1), dim3(64), stream); }, "deadlocks"), "divergent_barrier");
  {
    std::vector<int> out(32);
    expect(throws([&] { launch(partial_mask, dim3(1), dim3(32), stream, out.data()); }, "leaves out live lanes"),
           "partial_mask");
  }
  {
    std::vector<int> out(64, 0);
    launch(early_return, dim3(1), dim3(64), stream, out.data());
    expect(out[47] == 1 && out[48] == 0, "early_return");
  }
  {
    const __half h[2] = {{0x3c00}, {0xc100}};           // 1.0, -2.5
    const __nv_bfloat16 b[2] = {{0x3f80}, {0x4040}};    // 1.0, 3.0
    float out[2];
    launch(half_types, dim3(1), dim3(2), stream, h, b, out);
    expect(out[0] == 2.0f && out[1] == 0.5f, "half_types");
  }
  return failures ? 1 : 0;
}
