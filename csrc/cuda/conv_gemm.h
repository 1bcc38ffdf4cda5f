// Interface between the host code of the CUDA ops (ops.cpp) and the tensor-core
// implicit-GEMM kernel (conv_gemm.cu).  Plain structs only, so that the kernel
// file needs no ATen headers and compiles quickly.
#pragma once

#ifndef INCEPTION_FAST_EMULATE  // the CPU emulator in tests/ supplies cudaStream_t
#include <cuda_runtime_api.h>
#endif

#include <cstdint>

namespace inception_fast {

// How the products are formed: bf16 / fp16 on m16n8k16 tensor cores, fp32 on
// TF32 m16n8k8 tensor cores, or fp32 exactly with FFMA.  Accumulation is fp32.
enum class GemmMode : int { kBF16 = 0, kFP16 = 1, kTF32 = 2, kFP32 = 3 };

// How a row of the A operand (one output pixel) is formed from NHWC activations.
enum AMode : int {
  kA1x1 = 0,      // A[m, c] = a[m, c]: a 1x1 convolution
  kAMaxPool3 = 1, // A[m, c] = max over the 3x3 window around pixel m (out-of-image taps skipped)
  kAConv = 2,     // A[m, (kh, kw, c)] = a[pixel m shifted by (kh - k/2, kw - k/2), c], 0 outside the image
};

// One GEMM  C[M, nout] = relu(A[M, K] @ w[nout, K]^T + bias)  with K = ksize^2 * cin.
struct GemmProblem {
  const void* a;           // activations, NHWC, already offset to the first channel this problem reads
  const void* w;           // [nout, K] row-major; for kAConv K is ordered (kh, kw, c): a channels_last OIHW weight
  const void* bias;        // [nout]
  void* dst0;              // columns [0, split):    dst0[m * ld0 + col]
  void* dst1;              // columns [split, nout): dst1[m * ld1 + col - split]
  int64_t a_pixel_stride;  // elements from one pixel of `a` to the next (the channel count of its tensor)
  int64_t ld0, ld1;
  int cin, ksize, a_mode, nout, split;
  int vec;      // 1 when every A and B row chunk is 16-byte aligned, so cp.async can move them
  int n_tiles;  // set by launch_conv_gemm
};

// Up to two independent problems over the same pixels, computed by one launch.
struct GemmLaunch {
  GemmProblem prob[2];
  int num_problems;
  int M, H, W;       // M = N * H * W output pixels (rows), in NHW raster order
  int m_tiles;       // set by launch_conv_gemm
  int n_tiles_total; // set by launch_conv_gemm
};

// Enqueues the kernel on `stream` (which must belong to the current device).
void launch_conv_gemm(GemmLaunch launch, GemmMode mode, cudaStream_t stream);

}  // namespace inception_fast
