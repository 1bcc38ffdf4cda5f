// A CPU stand-in for the CUDA features csrc/cuda/conv_gemm.cu uses, so the tests
// can run that kernel's real source without a GPU (compiled with
// -DINCEPTION_FAST_EMULATE).
//
// * Every simulated thread is an OS thread; __syncthreads is a block barrier and
//   the warp-collective instructions (ldmatrix, mma.sync) exchange operands
//   through per-warp buffers between two warp barriers.
// * The fragment layouts follow the PTX ISA's "Matrix Fragments" tables for
//   mma.m16n8k16 (.f16/.bf16) and mma.m16n8k8 (.tf32), and ldmatrix .x4.
// * cp.async copies are queued per thread and performed when cp.async.wait_group
//   retires their group (the latest moment the hardware may land them), so a
//   read that is not covered by a wait sees stale data and fails.  With
//   INCEPTION_FAST_EMU_EAGER=1 (or emu::eager_copies() = true) they land at issue instead (the earliest moment),
//   so a prefetch that overwrites a stage other warps still read fails.  Shared
//   memory starts filled with NaN bytes, so reading a never-written element fails.
// * cp.async and ldmatrix check the 16-byte alignment the hardware demands of
//   their addresses (a misaligned one faults on a GPU; a CPU would not notice):
//   the launch then fails with an error instead.
// * Products are summed in double and rounded once: an ideal tensor core.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__

using cudaStream_t = void*;

struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }

struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  uint16_t bits;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
struct __half2 {
  __half x, y;
};

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float __bfloat162float(__nv_bfloat16 v) { return __uint_as_float(static_cast<unsigned>(v.bits) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {c10::detail::round_to_nearest_even(f)}; }
inline float __half2float(__half v) { return c10::detail::fp16_ieee_to_fp32_value(v.bits); }
inline __half __float2half_rn(float f) { return {c10::detail::fp16_ieee_from_fp32_value(f)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half_rn(a), __float2half_rn(b)}; }

inline float emu_max_nan(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return NAN;
  return a > b ? a : b;
}
inline __nv_bfloat162 __hmax2_nan(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__float2bfloat16_rn(emu_max_nan(__bfloat162float(a.x), __bfloat162float(b.x))),
          __float2bfloat16_rn(emu_max_nan(__bfloat162float(a.y), __bfloat162float(b.y)))};
}
inline __half2 __hmax2_nan(__half2 a, __half2 b) {
  return {__float2half_rn(emu_max_nan(__half2float(a.x), __half2float(b.x))),
          __float2half_rn(emu_max_nan(__half2float(a.y), __half2float(b.y)))};
}

struct EmuDim3 {
  unsigned x = 0, y = 0, z = 0;
};

namespace emu {

constexpr int kWarp = 32;

struct WarpExchange {
  std::unique_ptr<std::barrier<>> bar;
  const unsigned char* rows[kWarp];
  unsigned a[kWarp][4];
  unsigned b[kWarp][2];
};

struct Block {
  std::unique_ptr<std::barrier<>> bar;
  std::vector<WarpExchange> warps;
  std::vector<unsigned char> smem;
};

struct PendingCopy {
  void* dst;
  const void* src;
  bool valid;
};

struct ThreadState {
  EmuDim3 thread_idx, block_idx;
  Block* block = nullptr;
  std::vector<PendingCopy> open_group;
  std::deque<std::vector<PendingCopy>> committed;
};

inline thread_local ThreadState tls;

// Set by any thread that issued a cp.async or ldmatrix at a misaligned address; run_grid reports it.
inline std::atomic<bool>& misaligned() {
  static std::atomic<bool> flag{false};
  return flag;
}
inline void check_aligned16(const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) misaligned().store(true);
}

inline unsigned char* block_shared_memory() { return tls.block->smem.data(); }
inline int lane() { return static_cast<int>(tls.thread_idx.x) % kWarp; }
inline WarpExchange& warp() { return tls.block->warps[tls.thread_idx.x / kWarp]; }

inline void perform(const PendingCopy& c) {
  if (c.valid) {
    std::memcpy(c.dst, c.src, 16);
  } else {
    std::memset(c.dst, 0, 16);
  }
}

// Runs `kernel` once per simulated thread of every block, block after block.
inline void run_grid(unsigned blocks, int threads, int smem_bytes, const std::function<void()>& kernel) {
  for (unsigned b = 0; b < blocks; ++b) {
    Block block;
    block.bar = std::make_unique<std::barrier<>>(threads);
    block.warps.resize(threads / kWarp);
    for (auto& w : block.warps) w.bar = std::make_unique<std::barrier<>>(kWarp);
    block.smem.assign(static_cast<size_t>(smem_bytes), 0xFF);  // NaN in every dtype
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&block, &kernel, b, t] {
        tls = ThreadState{};
        tls.thread_idx.x = static_cast<unsigned>(t);
        tls.block_idx.x = b;
        tls.block = &block;
        kernel();
      });
    }
    for (auto& th : pool) th.join();
    if (misaligned().exchange(false)) {
      throw std::runtime_error("emulator: cp.async or ldmatrix at an address that is not 16-byte aligned");
    }
  }
}

}  // namespace emu

#define threadIdx (emu::tls.thread_idx)
#define blockIdx (emu::tls.block_idx)

inline void __syncthreads() { emu::tls.block->bar->arrive_and_wait(); }
inline void compiler_fence() {}

namespace emu {
inline std::atomic<bool>& eager_copies() {
  static std::atomic<bool> eager{[] {
    const char* v = std::getenv("INCEPTION_FAST_EMU_EAGER");
    return v != nullptr && v[0] == '1';
  }()};
  return eager;
}
}  // namespace emu
inline void cp_async16(void* smem_dst, const void* gmem_src, bool valid) {
  emu::check_aligned16(smem_dst);
  emu::check_aligned16(gmem_src);
  if (emu::eager_copies().load()) {
    emu::perform({smem_dst, gmem_src, valid});
  } else {
    emu::tls.open_group.push_back({smem_dst, gmem_src, valid});
  }
}
inline void cp_async_commit() {
  emu::tls.committed.push_back(std::move(emu::tls.open_group));
  emu::tls.open_group.clear();
}
template <int N>
inline void cp_async_wait() {
  while (emu::tls.committed.size() > static_cast<size_t>(N)) {
    for (const auto& c : emu::tls.committed.front()) emu::perform(c);
    emu::tls.committed.pop_front();
  }
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8i..8i+7 give the rows of
// matrix i; lane l receives, in register i, row l/4 of matrix i, bytes 4*(l%4)..+3.
inline void ldmatrix_x4(unsigned (&r)[4], const void* smem_row) {
  emu::WarpExchange& w = emu::warp();
  const int l = emu::lane();
  emu::check_aligned16(smem_row);
  w.rows[l] = static_cast<const unsigned char*>(smem_row);
  w.bar->arrive_and_wait();
  for (int i = 0; i < 4; ++i) std::memcpy(&r[i], w.rows[i * 8 + l / 4] + 4 * (l % 4), 4);
  w.bar->arrive_and_wait();
}

namespace emu {
inline float lo16(unsigned v, const __nv_bfloat16*) { return __bfloat162float({static_cast<uint16_t>(v & 0xFFFF)}); }
inline float hi16(unsigned v, const __nv_bfloat16*) { return __bfloat162float({static_cast<uint16_t>(v >> 16)}); }
inline float lo16(unsigned v, const __half*) { return __half2float({static_cast<uint16_t>(v & 0xFFFF)}); }
inline float hi16(unsigned v, const __half*) { return __half2float({static_cast<uint16_t>(v >> 16)}); }

// Gathers the warp's fragments into the full A (16 x K) and B (K x 8) operands.
template <typename Unpack>
inline void mma_warp(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1, int k_dim, Unpack unpack) {
  WarpExchange& w = warp();
  const int l = lane();
  for (int i = 0; i < 4; ++i) w.a[l][i] = a[i];
  w.b[l][0] = b0;
  w.b[l][1] = b1;
  w.bar->arrive_and_wait();
  double A[16][16] = {};
  double B[16][8] = {};
  for (int src = 0; src < kWarp; ++src) unpack(src, w.a[src], w.b[src], A, B);
  w.bar->arrive_and_wait();
  const int g = l / 4;
  const int t = l % 4;
  const int rows[4] = {g, g, g + 8, g + 8};
  const int cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  for (int e = 0; e < 4; ++e) {
    double acc = d[e];
    for (int k = 0; k < k_dim; ++k) acc += A[rows[e]][k] * B[k][cols[e]];
    d[e] = static_cast<float>(acc);
  }
}
}  // namespace emu

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: A rows g / g+8 in a0,a2 / a1,a3,
// columns 2t,2t+1 (+8 in a2,a3); B rows 2t,2t+1 (+8 in b1), column g.
template <typename T>
inline void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1, const T* tag) {
  emu::mma_warp(d, a, b0, b1, 16,
                [tag](int src, const unsigned* fa, const unsigned* fb, double (&A)[16][16], double (&B)[16][8]) {
                  const int g = src / 4;
                  const int t = src % 4;
                  const int arow[4] = {g, g + 8, g, g + 8};
                  const int acol[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
                  for (int i = 0; i < 4; ++i) {
                    A[arow[i]][acol[i]] = emu::lo16(fa[i], tag);
                    A[arow[i]][acol[i] + 1] = emu::hi16(fa[i], tag);
                  }
                  for (int i = 0; i < 2; ++i) {
                    B[2 * t + 8 * i][g] = emu::lo16(fb[i], tag);
                    B[2 * t + 8 * i + 1][g] = emu::hi16(fb[i], tag);
                  }
                });
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32: A rows g (a0,a2) / g+8 (a1,a3),
// columns t (a0,a1) / t+4 (a2,a3); B rows t (b0) / t+4 (b1), column g.
inline void mma_1688_tf32(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  emu::mma_warp(d, a, b0, b1, 8,
                [](int src, const unsigned* fa, const unsigned* fb, double (&A)[16][16], double (&B)[16][8]) {
                  const int g = src / 4;
                  const int t = src % 4;
                  A[g][t] = __uint_as_float(fa[0]);
                  A[g + 8][t] = __uint_as_float(fa[1]);
                  A[g][t + 4] = __uint_as_float(fa[2]);
                  A[g + 8][t + 4] = __uint_as_float(fa[3]);
                  B[t][g] = __uint_as_float(fb[0]);
                  B[t + 4][g] = __uint_as_float(fb[1]);
                });
}

// cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero.
inline unsigned to_tf32(float v) {
  unsigned u = __float_as_uint(v);
  if (std::isfinite(v)) u = (u + 0x1000u) & 0xFFFFE000u;
  return u;
}
