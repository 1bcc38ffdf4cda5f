// Tensor-core implicit GEMM behind both launches of the fused Inception block.
//
// Every output pixel m (NHW raster order) is a GEMM row; an output channel is a
// column.  One launch computes up to two problems over the same pixels, each a
//     C[M, nout] = relu(A[M, K] @ w[nout, K]^T + bias),  fp32 accumulation,
// and scatters column blocks of C into strided NHWC channel slices:
//   * launch 1 (reduce_pool_): problem 0 = the three 1x1 convs reading x
//     (A = x itself); columns [0, ch1) go to out, the rest to scratch.
//     Problem 1 = the pool branch: A is the 3x3/s1/p1 max pool of x, formed
//     while the tile is loaded, so the pooled tensor never exists in memory.
//   * launch 2 (branch_convs_): the 3x3 and the kxk convs over scratch, each an
//     implicit GEMM over K = (kh, kw, c); A gathers shifted pixels, with zeros
//     outside the image.
// Layouts: activations NHWC (channels_last); w [nout, K] row-major, which for a
// kxk conv is the channels_last OIHW weight.  dtypes: bf16 / fp16 on
// mma.sync.m16n8k16; fp32 on TF32 mma.sync.m16n8k8 or exact FFMA.
//
// Tiling: 128 x 128 block tile, 256 threads = 8 warps as 2 (M) x 4 (N), each
// warp 64 x 32.  K advances 64 bytes per step (32 halves or 16 floats) through
// a 3-stage shared-memory ring filled with cp.async (16-byte chunks, zero-fill
// for out-of-range rows, K tails and image borders).  The max-pool A tile and
// the unaligned ("scalar") fallback are loaded with ordinary loads instead.
// The exact-fp32 path keeps the tensor-core accumulator layout and emulates it
// with FFMA, so all paths share the loaders and the epilogue.
//
// The tests also compile this file for the CPU with INCEPTION_FAST_EMULATE
// (tests/cuda_emulator/): each simulated thread is an OS thread, and the
// warp-level primitives of ptx.h (cp.async, ldmatrix, mma) are replaced by
// emulations, so loaders, pipeline, masks and epilogue are checked without a GPU.
#include "conv_gemm.h"

#include <c10/util/Exception.h>

#ifndef INCEPTION_FAST_EMULATE  // the emulator (tests/cuda_emulator/emulator.h) supplies the PTX wrappers
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ptx.h"
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "conv_gemm.cu needs sm_80 or newer (bf16 mma.sync, cp.async); set TORCH_CUDA_ARCH_LIST to 8.0 or above"
#endif

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>

namespace inception_fast {
namespace {

constexpr int kBlockM = 128;
constexpr int kBlockN = 128;
constexpr int kThreads = 256;
constexpr int kStages = 3;
constexpr int kRowBytes = 64;                  // one K step of one tile row
constexpr int kSmemRowBytes = kRowBytes + 16;  // the pad puts the 8 rows an ldmatrix phase reads on distinct banks
constexpr int kChunksPerRow = kRowBytes / 16;  // 16-byte chunks per tile row per K step
constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // 64: each thread moves rows r and r + 64
constexpr int kTileBytesA = kBlockM * kSmemRowBytes;
constexpr int kStageBytes = (kBlockM + kBlockN) * kSmemRowBytes;
constexpr int kSmemBytes = kStages * kStageBytes;  // 61440: over the 48 KiB static limit, so opted in at launch
constexpr int kSmemRowFloats = kSmemRowBytes / 4;

static_assert(kBlockM == 2 * kRowsPerPass && kBlockN == 2 * kRowsPerPass, "loader covers a tile in two passes");

template <GemmMode MODE>
struct Traits;
template <>
struct Traits<GemmMode::kBF16> {
  using T = __nv_bfloat16;
};
template <>
struct Traits<GemmMode::kFP16> {
  using T = __half;
};
template <>
struct Traits<GemmMode::kTF32> {
  using T = float;
};
template <>
struct Traits<GemmMode::kFP32> {
  using T = float;
};

__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(float v) { return v; }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}

__device__ __forceinline__ void store_pair(__nv_bfloat16* p, float v0, float v1) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v0, v1);
}
__device__ __forceinline__ void store_pair(__half* p, float v0, float v1) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(v0, v1);
}
__device__ __forceinline__ void store_pair(float* p, float v0, float v1) {
  *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
}

// max that propagates NaN, as torch's max_pool2d does.
__device__ __forceinline__ float max_nan(float a, float b) { return (b > a || b != b) ? b : a; }

// Lane-wise max of two 16-byte chunks.  memcpy, not pointer casts, moves between
// uint4 and the pair types: punning a local through a cast is undefined and an
// optimiser may drop the stores (the CPU emulator of this file did just that).
template <typename Pair>
__device__ __forceinline__ uint4 max16_pairs(uint4 a, uint4 b) {
  Pair pa[4], pb[4], pr[4];
  memcpy(pa, &a, sizeof(pa));
  memcpy(pb, &b, sizeof(pb));
#pragma unroll
  for (int i = 0; i < 4; ++i) pr[i] = __hmax2_nan(pa[i], pb[i]);
  uint4 r;
  memcpy(&r, pr, sizeof(r));
  return r;
}
__device__ __forceinline__ uint4 max16(uint4 a, uint4 b, const __nv_bfloat16*) {
  return max16_pairs<__nv_bfloat162>(a, b);
}
__device__ __forceinline__ uint4 max16(uint4 a, uint4 b, const __half*) { return max16_pairs<__half2>(a, b); }
__device__ __forceinline__ uint4 max16(uint4 a, uint4 b, const float*) {
  uint4 r;
  r.x = __float_as_uint(max_nan(__uint_as_float(a.x), __uint_as_float(b.x)));
  r.y = __float_as_uint(max_nan(__uint_as_float(a.y), __uint_as_float(b.y)));
  r.z = __float_as_uint(max_nan(__uint_as_float(a.z), __uint_as_float(b.z)));
  r.w = __float_as_uint(max_nan(__uint_as_float(a.w), __uint_as_float(b.w)));
  return r;
}

// Eight (or four) -inf values of T as one 16-byte chunk.
__device__ __forceinline__ uint4 neg_inf16(const __nv_bfloat16*) {
  return make_uint4(0xFF80FF80u, 0xFF80FF80u, 0xFF80FF80u, 0xFF80FF80u);
}
__device__ __forceinline__ uint4 neg_inf16(const __half*) {
  return make_uint4(0xFC00FC00u, 0xFC00FC00u, 0xFC00FC00u, 0xFC00FC00u);
}
__device__ __forceinline__ uint4 neg_inf16(const float*) {
  return make_uint4(0xFF800000u, 0xFF800000u, 0xFF800000u, 0xFF800000u);
}

// Per-thread state of the tile loaders: the operands of the problem this block
// computes, and which rows and 16-byte chunk of the A and B tiles this thread
// moves (chunk `chunk` of tile rows `row` and `row + kRowsPerPass`).
template <typename T>
struct TileLoader {
  const T* a;          // activations, NHWC, offset to the problem's first channel
  const T* w;          // weights [nout, K]
  int a_pixel_stride;  // elements from one pixel of `a` to the next
  int cin;             // input channels of the problem
  int ksize;           // square kernel size (1 for the 1x1 and pool problems)
  int pad;             // ksize / 2
  int a_mode;          // AMode: how an A row is formed
  int nout;            // output channels (B rows)
  int M, H, W;         // output pixels (N * H * W), image height and width
  int K;               // ksize * ksize * cin
  int row, chunk;

  // True when the pixel packed in `hw` (see LoadRows) shifted by (dh, dw) lies inside the image.
  __device__ __forceinline__ bool inside(int hw, int dh, int dw) const {
    const int ih = (hw >> 16) + dh;
    const int iw = (hw & 0xffff) + dw;
    return ih >= 0 && ih < H && iw >= 0 && iw < W;
  }
};

// The two tile rows a thread loads: for A the pixel index and its (h, w) packed
// as h << 16 | w (the host keeps H and W below 2^15), for B the weight row.
// Validity (m < M, n < nout) is recomputed on use: registers are the scarce
// resource here.
struct LoadRows {
  int a_m[2], a_hw[2], b_n[2];
};

// Chunks moved by cp.async: B always, A for the 1x1 and conv problems.  Only on the aligned path.
template <typename T, bool VEC>
__device__ __forceinline__ void load_tile_async(unsigned char* smem, int stage, int kt, const TileLoader<T>& ld,
                                                const LoadRows& rows) {
  if constexpr (!VEC) return;
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  constexpr int kBK = kRowBytes / static_cast<int>(sizeof(T));
  unsigned char* const a_tile = smem + stage * kStageBytes;
  unsigned char* const b_tile = a_tile + kTileBytesA;
  const int k = kt * kBK + ld.chunk * kVec;
  const bool k_ok = k < ld.K;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const bool ok = rows.b_n[i] < ld.nout && k_ok;
    cp_async16(b_tile + (ld.row + i * kRowsPerPass) * kSmemRowBytes + ld.chunk * 16,
               ok ? ld.w + static_cast<int64_t>(rows.b_n[i]) * ld.K + k : ld.w, ok);
  }
  if (ld.a_mode == kA1x1) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const bool ok = rows.a_m[i] < ld.M && k_ok;
      const T* src = ok ? ld.a + static_cast<int64_t>(rows.a_m[i]) * ld.a_pixel_stride + k : ld.a;
      cp_async16(a_tile + (ld.row + i * kRowsPerPass) * kSmemRowBytes + ld.chunk * 16, src, ok);
    }
  } else if (ld.a_mode == kAConv) {
    // cin % kVec == 0 on this path, so a chunk never straddles two taps.
    const int tap = k / ld.cin;
    const int c = k - tap * ld.cin;
    const int kh = tap / ld.ksize;
    const int dh = kh - ld.pad;
    const int dw = tap - kh * ld.ksize - ld.pad;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const bool ok = rows.a_m[i] < ld.M && k_ok && ld.inside(rows.a_hw[i], dh, dw);
      const T* src = ok ? ld.a + static_cast<int64_t>(rows.a_m[i] + dh * ld.W + dw) * ld.a_pixel_stride + c : ld.a;
      cp_async16(a_tile + (ld.row + i * kRowsPerPass) * kSmemRowBytes + ld.chunk * 16, src, ok);
    }
  }
}

// Everything cp.async cannot do: the pooled A tile (a max over nine loads), and
// on the unaligned path every element of A and B one by one.
template <typename T, bool VEC>
__device__ __forceinline__ void load_tile_sync(unsigned char* smem, int stage, int kt, const TileLoader<T>& ld,
                                               const LoadRows& rows) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  constexpr int kBK = kRowBytes / static_cast<int>(sizeof(T));
  unsigned char* const a_tile = smem + stage * kStageBytes;
  unsigned char* const b_tile = a_tile + kTileBytesA;
  const int k0 = kt * kBK + ld.chunk * kVec;
  if constexpr (VEC) {
    if (ld.a_mode != kAMaxPool3) return;
    // Window row by window row for both chunks: six 16-byte loads in flight.
    // The fence keeps the compiler from hoisting all eighteen at once, which
    // would need 72 more registers next to the 64 accumulators and spill.
    uint4 v[2];
    const T* center[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const bool ok = rows.a_m[i] < ld.M && k0 < ld.K;
      center[i] = ld.a + static_cast<int64_t>(ok ? rows.a_m[i] : 0) * ld.a_pixel_stride + (ok ? k0 : 0);
      // -inf is the max's identity (and what the padding acts as); rows past M and
      // the K tail must be 0 instead, or 0 * -inf would poison the products.
      v[i] = ok ? neg_inf16(static_cast<const T*>(nullptr)) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int dh = -1; dh <= 1; ++dh) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        if (rows.a_m[i] < ld.M && k0 < ld.K) {
#pragma unroll
          for (int dw = -1; dw <= 1; ++dw) {
            if (!ld.inside(rows.a_hw[i], dh, dw)) continue;
            const uint4 u =
                *reinterpret_cast<const uint4*>(center[i] + static_cast<int64_t>(dh * ld.W + dw) * ld.a_pixel_stride);
            v[i] = max16(v[i], u, static_cast<const T*>(nullptr));
          }
        }
      }
      compiler_fence();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      *reinterpret_cast<uint4*>(a_tile + (ld.row + i * kRowsPerPass) * kSmemRowBytes + ld.chunk * 16) = v[i];
    }
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      T* b_dst = reinterpret_cast<T*>(b_tile + (ld.row + i * kRowsPerPass) * kSmemRowBytes + ld.chunk * 16);
      T* a_dst = reinterpret_cast<T*>(a_tile + (ld.row + i * kRowsPerPass) * kSmemRowBytes + ld.chunk * 16);
      for (int e = 0; e < kVec; ++e) {
        const int k = k0 + e;
        b_dst[e] = (rows.b_n[i] < ld.nout && k < ld.K) ? ld.w[static_cast<int64_t>(rows.b_n[i]) * ld.K + k]
                                                       : from_float<T>(0.f);
        float v = 0.f;
        if (rows.a_m[i] < ld.M && k < ld.K) {
          const int64_t pixel = rows.a_m[i];
          if (ld.a_mode == kA1x1) {
            v = to_float(ld.a[pixel * ld.a_pixel_stride + k]);
          } else if (ld.a_mode == kAMaxPool3) {
            v = to_float(ld.a[pixel * ld.a_pixel_stride + k]);
            for (int dh = -1; dh <= 1; ++dh) {
              for (int dw = -1; dw <= 1; ++dw) {
                if (ld.inside(rows.a_hw[i], dh, dw)) {
                  v = max_nan(
                      v, to_float(ld.a[static_cast<int64_t>(rows.a_m[i] + dh * ld.W + dw) * ld.a_pixel_stride + k]));
                }
              }
            }
          } else {
            const int tap = k / ld.cin;
            const int c = k - tap * ld.cin;
            const int kh = tap / ld.ksize;
            const int dh = kh - ld.pad;
            const int dw = tap - kh * ld.ksize - ld.pad;
            if (ld.inside(rows.a_hw[i], dh, dw)) {
              v = to_float(ld.a[static_cast<int64_t>(rows.a_m[i] + dh * ld.W + dw) * ld.a_pixel_stride + c]);
            }
          }
        }
        a_dst[e] = from_float<T>(v);
      }
    }
  }
}

// acc += the A tile of `stage` @ its B tile^T for this warp's 64 x 32 sub-tile:
// ldmatrix + m16n8k16 mma for bf16 / fp16, scalar loads + m16n8k8 TF32 mma, or
// FFMA in the mma's accumulator layout for exact fp32.
template <GemmMode MODE>
__device__ __forceinline__ void compute_stage(const unsigned char* smem, int stage, float (&acc)[4][4][4], int warp_m,
                                              int warp_n, int lane) {
  using T = typename Traits<MODE>::T;
  constexpr int kBK = kRowBytes / static_cast<int>(sizeof(T));
  const int g = lane >> 2;
  const int t = lane & 3;
  const unsigned char* const a_tile = smem + stage * kStageBytes;
  const unsigned char* const b_tile = a_tile + kTileBytesA;
  if constexpr (MODE == GemmMode::kBF16 || MODE == GemmMode::kFP16) {
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      // B fragments for the warp's four column tiles stay live; A fragments are
      // loaded one 16-row tile at a time to keep register pressure down.
      unsigned bf[4][2];
#pragma unroll
      for (int jp = 0; jp < 2; ++jp) {
        // Matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
        // = b0, b1 of column tile 2jp, then b0, b1 of column tile 2jp+1.
        const int row = warp_n * 32 + jp * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int col = kk + ((lane >> 3) & 1) * 8;
        unsigned r[4];
        ldmatrix_x4(r, b_tile + row * kSmemRowBytes + col * 2);
        bf[2 * jp][0] = r[0];
        bf[2 * jp][1] = r[1];
        bf[2 * jp + 1][0] = r[2];
        bf[2 * jp + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        // Matrices: rows 0-7 / 8-15 (lane bit 3) x k 0-7 / 8-15 (lane bit 4) = a0..a3.
        const int row = warp_m * 64 + i * 16 + (lane & 15);
        const int col = kk + (lane >> 4) * 8;
        unsigned af[4];
        ldmatrix_x4(af, a_tile + row * kSmemRowBytes + col * 2);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_16816(acc[i][j], af, bf[j][0], bf[j][1], static_cast<const T*>(nullptr));
      }
    }
  } else if constexpr (MODE == GemmMode::kTF32) {
    const float* af32 = reinterpret_cast<const float*>(a_tile);
    const float* bf32 = reinterpret_cast<const float*>(b_tile);
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 8) {
      unsigned bf[4][2];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int n = warp_n * 32 + j * 8 + g;
        bf[j][0] = to_tf32(bf32[n * kSmemRowFloats + kk + t]);
        bf[j][1] = to_tf32(bf32[n * kSmemRowFloats + kk + t + 4]);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = warp_m * 64 + i * 16 + g;
        unsigned af[4];
        af[0] = to_tf32(af32[row * kSmemRowFloats + kk + t]);
        af[1] = to_tf32(af32[(row + 8) * kSmemRowFloats + kk + t]);
        af[2] = to_tf32(af32[row * kSmemRowFloats + kk + t + 4]);
        af[3] = to_tf32(af32[(row + 8) * kSmemRowFloats + kk + t + 4]);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_1688_tf32(acc[i][j], af, bf[j][0], bf[j][1]);
      }
    }
  } else {
    const float* af32 = reinterpret_cast<const float*>(a_tile);
    const float* bf32 = reinterpret_cast<const float*>(b_tile);
#pragma unroll 4
    for (int k = 0; k < kBK; ++k) {
      float av[4][2];
      float bv[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = warp_m * 64 + i * 16 + g;
        av[i][0] = af32[row * kSmemRowFloats + k];
        av[i][1] = af32[(row + 8) * kSmemRowFloats + k];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int n = warp_n * 32 + j * 8 + 2 * t;
        bv[j][0] = bf32[n * kSmemRowFloats + k];
        bv[j][1] = bf32[(n + 1) * kSmemRowFloats + k];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[i][j][0] = fmaf(av[i][0], bv[j][0], acc[i][j][0]);
          acc[i][j][1] = fmaf(av[i][0], bv[j][1], acc[i][j][1]);
          acc[i][j][2] = fmaf(av[i][1], bv[j][0], acc[i][j][2]);
          acc[i][j][3] = fmaf(av[i][1], bv[j][1], acc[i][j][3]);
        }
    }
  }
}

// Bias + ReLU on this warp's accumulators and the stores into the problem's
// destinations: columns [0, dst0_cols) to dst0, the rest to dst1, each row at
// its destination's row stride; adjacent columns go out as one paired store.
// Rows past M and columns past nout (the problem's, passed in registers) are skipped.
template <typename T>
__device__ __forceinline__ void store_epilogue(const float (&acc)[4][4][4], const GemmProblem& prob, int M, int nout,
                                               int m0, int n0, int warp_m, int warp_n, int lane) {
  const int g = lane >> 2;
  const int t = lane & 3;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int col = n0 + warp_n * 32 + j * 8 + 2 * t;
    T* dptr[2];
    int64_t row_stride[2];
    float bv[2];
    bool cok[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int c = col + e;
      cok[e] = c < nout;
      dptr[e] = nullptr;
      row_stride[e] = 0;
      bv[e] = 0.f;
      if (cok[e]) {
        if (c < prob.dst0_cols) {
          dptr[e] = static_cast<T*>(prob.dst0) + c;
          row_stride[e] = prob.dst0_row_stride;
        } else {
          dptr[e] = static_cast<T*>(prob.dst1) + (c - prob.dst0_cols);
          row_stride[e] = prob.dst1_row_stride;
        }
        bv[e] = to_float(static_cast<const T*>(prob.bias)[c]);
      }
    }
    // Both columns adjacent in one destination with every row 2-element aligned: one paired store.
    const bool paired = cok[0] && cok[1] && dptr[1] == dptr[0] + 1 && row_stride[0] == row_stride[1] &&
                        (row_stride[0] % 2) == 0 && (reinterpret_cast<uintptr_t>(dptr[0]) % (2 * sizeof(T))) == 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = m0 + warp_m * 64 + i * 16 + g + hh * 8;
        if (row >= M) continue;
        // ReLU written so that NaN passes through, as torch.relu does.
        float v0 = acc[i][j][2 * hh] + bv[0];
        float v1 = acc[i][j][2 * hh + 1] + bv[1];
        v0 = v0 < 0.f ? 0.f : v0;
        v1 = v1 < 0.f ? 0.f : v1;
        if (paired) {
          store_pair(dptr[0] + static_cast<int64_t>(row) * row_stride[0], v0, v1);
        } else {
          if (cok[0]) dptr[0][static_cast<int64_t>(row) * row_stride[0]] = from_float<T>(v0);
          if (cok[1]) dptr[1][static_cast<int64_t>(row) * row_stride[1]] = from_float<T>(v1);
        }
      }
    }
  }
}

// One block computes a 128 x 128 tile of C = relu(A @ w^T + bias) for one of the
// launch's problems, through a kStages-deep cp.async pipeline over K, and stores it
// into that problem's NHWC channel slices.  VEC: every A and B row chunk is 16-byte
// aligned (cp.async / vector paths); otherwise every element is loaded on its own.
//
// Accumulator layout (the mma C fragment, kept by the FFMA path too): thread
// (g = lane / 4, t = lane % 4) holds acc[i][j][0..3] = C at rows
// warp_m*64 + i*16 + g (+8 for [2], [3]), columns warp_n*32 + j*8 + 2t (+1 for [1], [3]).
template <GemmMode MODE, bool VEC>
__global__ void __launch_bounds__(kThreads, 2) conv_gemm_kernel(const __grid_constant__ GemmLaunch launch) {
  using T = typename Traits<MODE>::T;
  constexpr int kBK = kRowBytes / static_cast<int>(sizeof(T));  // K elements per pipeline step
#ifdef INCEPTION_FAST_EMULATE
  unsigned char* const smem = emu::block_shared_memory();
#else
  extern __shared__ __align__(128) unsigned char smem[];
#endif

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m = warp & 1;
  const int warp_n = warp >> 1;

  // Consecutive blocks share an M tile, so its A rows are read from DRAM once and
  // then from L2 by the blocks computing its other column tiles.
  const int m_tile = static_cast<int>(blockIdx.x) / launch.n_tiles_total;
  int n_tile = static_cast<int>(blockIdx.x) - m_tile * launch.n_tiles_total;
  const bool second = n_tile >= launch.prob[0].n_tiles;
  if (second) n_tile -= launch.prob[0].n_tiles;
  // __grid_constant__ lets this reference point into the kernel parameters
  // (constant bank) instead of a local-memory copy, so fields are re-read there
  // on use rather than pinned in registers.
  const GemmProblem& prob = launch.prob[second ? 1 : 0];
  TileLoader<T> ld;
  ld.a = static_cast<const T*>(prob.a);
  ld.w = static_cast<const T*>(prob.w);
  ld.a_pixel_stride = static_cast<int>(prob.a_pixel_stride);
  ld.cin = prob.cin;
  ld.ksize = prob.ksize;
  ld.a_mode = prob.a_mode;
  ld.nout = prob.nout;
  ld.M = launch.M;
  ld.H = launch.H;
  ld.W = launch.W;
  ld.K = ld.ksize * ld.ksize * ld.cin;
  ld.pad = ld.ksize / 2;
  const int num_kt = (ld.K + kBK - 1) / kBK;
  const int m0 = m_tile * kBlockM;
  const int n0 = n_tile * kBlockN;

  ld.row = tid / kChunksPerRow;
  ld.chunk = tid % kChunksPerRow;
  LoadRows rows;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int m = m0 + ld.row + i * kRowsPerPass;
    rows.a_m[i] = m;
    const int rem = m % (ld.H * ld.W);
    const int h = rem / ld.W;
    rows.a_hw[i] = (h << 16) | (rem - h * ld.W);
    rows.b_n[i] = n0 + ld.row + i * kRowsPerPass;
  }

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  // A warp whose 64 x 32 sub-tile lies wholly past M or nout only helps load.
  const bool warp_busy = (n0 + warp_n * 32 < ld.nout) && (m0 + warp_m * 64 < ld.M);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_kt) {
      load_tile_async<T, VEC>(smem, s, s, ld, rows);
      load_tile_sync<T, VEC>(smem, s, s, ld, rows);
    }
    cp_async_commit();
  }
  for (int kt = 0; kt < num_kt; ++kt) {
    cp_async_wait<kStages - 2>();
    // Tile kt is now visible to all threads, and every thread has finished
    // computing on the stage the prefetch below overwrites (tile kt - 1's).
    __syncthreads();
    const int prefetch_kt = kt + kStages - 1;
    if (prefetch_kt < num_kt) load_tile_async<T, VEC>(smem, prefetch_kt % kStages, prefetch_kt, ld, rows);
    cp_async_commit();
    if (warp_busy) compute_stage<MODE>(smem, kt % kStages, acc, warp_m, warp_n, lane);
    // Issued after the MMAs so their latency overlaps other warps' tensor work.
    if (prefetch_kt < num_kt) load_tile_sync<T, VEC>(smem, prefetch_kt % kStages, prefetch_kt, ld, rows);
  }
  cp_async_wait<0>();

  if (!warp_busy) return;
  store_epilogue<T>(acc, prob, ld.M, ld.nout, m0, n0, warp_m, warp_n, lane);
}

#ifdef INCEPTION_FAST_EMULATE
template <GemmMode MODE, bool VEC>
void launch_mode(const GemmLaunch& p, unsigned blocks, cudaStream_t) {
  emu::run_grid(blocks, kThreads, kSmemBytes, [&p] { conv_gemm_kernel<MODE, VEC>(p); });
}
#else
template <GemmMode MODE, bool VEC>
void launch_mode(const GemmLaunch& p, unsigned blocks, cudaStream_t stream) {
  // The opt-in to >48 KiB of dynamic shared memory is per device; remember where it was done.
  static std::atomic<unsigned long long> configured{0};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const unsigned long long bit = device < 64 ? (1ull << device) : 0ull;
  if (bit == 0ull || (configured.load() & bit) == 0ull) {
    C10_CUDA_CHECK(
        cudaFuncSetAttribute(conv_gemm_kernel<MODE, VEC>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    configured.fetch_or(bit);
  }
  conv_gemm_kernel<MODE, VEC><<<blocks, kThreads, kSmemBytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
#endif  // INCEPTION_FAST_EMULATE

}  // namespace

void launch_conv_gemm(GemmLaunch p, GemmMode mode, cudaStream_t stream) {
  TORCH_CHECK(p.num_problems >= 1 && p.num_problems <= 2, "launch_conv_gemm: 1 or 2 problems, got ", p.num_problems);
  // With one problem, prob[1] gets zero tiles, so no block ever selects it.
  if (p.num_problems == 1) p.prob[1] = p.prob[0];
  p.n_tiles_total = 0;
  for (int q = 0; q < 2; ++q) {
    GemmProblem& pr = p.prob[q];
    pr.n_tiles = q < p.num_problems ? (pr.nout + kBlockN - 1) / kBlockN : 0;
    p.n_tiles_total += pr.n_tiles;
  }
  // The kernel packs a pixel's (h, w) into one int and indexes pixels and channels in int.
  TORCH_CHECK(p.H < 32768 && p.W < 32768, "launch_conv_gemm: H and W must be below 32768, got ", p.H, " x ", p.W);
  for (int q = 0; q < p.num_problems; ++q) {
    TORCH_CHECK(p.prob[q].a_pixel_stride < INT_MAX, "launch_conv_gemm: channel count ", p.prob[q].a_pixel_stride,
                " too large");
  }
  p.m_tiles = (p.M + kBlockM - 1) / kBlockM;
  if (p.M <= 0 || p.n_tiles_total == 0) return;
  const int64_t blocks = static_cast<int64_t>(p.m_tiles) * p.n_tiles_total;
  TORCH_CHECK(blocks <= INT_MAX, "launch_conv_gemm: ", blocks, " thread blocks exceed the grid limit");
  const unsigned grid = static_cast<unsigned>(blocks);
  const bool vec = p.prob[0].vec != 0 && (p.num_problems < 2 || p.prob[1].vec != 0);
  switch (mode) {
    case GemmMode::kBF16:
      vec ? launch_mode<GemmMode::kBF16, true>(p, grid, stream) : launch_mode<GemmMode::kBF16, false>(p, grid, stream);
      break;
    case GemmMode::kFP16:
      vec ? launch_mode<GemmMode::kFP16, true>(p, grid, stream) : launch_mode<GemmMode::kFP16, false>(p, grid, stream);
      break;
    case GemmMode::kTF32:
      vec ? launch_mode<GemmMode::kTF32, true>(p, grid, stream) : launch_mode<GemmMode::kTF32, false>(p, grid, stream);
      break;
    case GemmMode::kFP32:
      vec ? launch_mode<GemmMode::kFP32, true>(p, grid, stream) : launch_mode<GemmMode::kFP32, false>(p, grid, stream);
      break;
  }
}

}  // namespace inception_fast
