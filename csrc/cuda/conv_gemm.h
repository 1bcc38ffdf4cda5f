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
  kA1x1 = 0,       // A[m, c] = a[m, c]: a 1x1 convolution
  kAMaxPool3 = 1,  // A[m, c] = max over the 3x3 window around pixel m (out-of-image taps skipped)
  kAConv = 2,      // A[m, (kh, kw, c)] = a[pixel m shifted by (kh - k/2, kw - k/2), c], 0 outside the image
};

// One GEMM  C[M, nout] = relu(A[M, K] @ w[nout, K]^T + bias)  with K = ksize^2 * cin.
// The field order is the kernel's parameter layout; keep it when adding fields.
struct GemmProblem {
  // Operands.
  const void* a;     // activations, NHWC, already offset to the first channel this problem reads
  const void* w;     // [nout, K] row-major; for kAConv K is ordered (kh, kw, c): a channels_last OIHW weight
  const void* bias;  // [nout]
  // Destinations: output column col of pixel m goes to
  //   dst0[m * dst0_row_stride + col]              for col in [0, dst0_cols),
  //   dst1[m * dst1_row_stride + col - dst0_cols]  for col in [dst0_cols, nout).
  void* dst0;
  void* dst1;
  // Strides, in elements.
  int64_t a_pixel_stride;  // from one pixel of `a` to the next (the channel count of its tensor)
  int64_t dst0_row_stride, dst1_row_stride;
  // Shape.
  int cin;        // input channels read from `a`
  int ksize;      // square kernel size; 1 for the 1x1 and the pooled problems
  int a_mode;     // AMode
  int nout;       // output channels (columns of C)
  int dst0_cols;  // how many leading columns go to dst0
  // Set on the host.
  int vec;      // 1 when every A and B row chunk is 16-byte aligned, so cp.async can move them
  int n_tiles;  // column tiles of this problem; set by launch_conv_gemm
};

// Up to two independent problems over the same pixels, computed by one launch.
struct GemmLaunch {
  GemmProblem prob[2];
  int num_problems;
  int M, H, W;        // M = N * H * W output pixels (rows), in NHW raster order; image height, width
  int m_tiles;        // row tiles; set by launch_conv_gemm
  int n_tiles_total;  // column tiles of both problems (the grid is m_tiles x n_tiles_total); set by launch_conv_gemm
};

// Enqueues the kernel on `stream` (which must belong to the current device).
void launch_conv_gemm(GemmLaunch launch, GemmMode mode, cudaStream_t stream);

}  // namespace inception_fast
