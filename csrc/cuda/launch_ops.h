// Host-side description of the two launches as conv_gemm problems, shared by the
// CUDA ops (ops.cpp) and the CPU emulator of the kernel used in the tests
// (tests/cuda_emulator/), so both run exactly the same setup:
//   launch 1 (reduce_pool_): problem 0 = x2d @ w_red^T -> out[:, :ch1] | scratch;
//     problem 1 = maxpool3x3(x)2d @ w_pool^T -> out[:, C_total - pool_proj:]
//   launch 2 (branch_convs_): problem 0 = conv3x3(scratch[:, :ch3red], w3) -> out[:, ch1 : ch1+ch3];
//     problem 1 = convkxk(scratch[:, ch3red:], w5) -> out[:, ch1+ch3 : ch1+ch3+ch5]
// All activations NHWC (channels_last); w3 / w5 as channels_last OIHW are [Cout, k*k*Cin].
// The caller provides device guard, stream and the TF32 decision.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../checks.h"
#include "conv_gemm.h"

namespace inception_fast {

inline GemmMode gemm_mode_for(at::ScalarType st, bool allow_tf32) {
  switch (st) {
    case at::kBFloat16:
      return GemmMode::kBF16;
    case at::kHalf:
      return GemmMode::kFP16;
    default:
      return allow_tf32 ? GemmMode::kTF32 : GemmMode::kFP32;
  }
}

inline const void* element_ptr(const at::Tensor& t, int64_t elements) {
  return static_cast<const char*>(t.data_ptr()) + elements * t.element_size();
}
inline void* mutable_element_ptr(const at::Tensor& t, int64_t elements) {
  return static_cast<char*>(t.data_ptr()) + elements * t.element_size();
}

// The cp.async loaders move 16-byte chunks of A and B rows; that needs every row
// start 16-byte aligned and whole chunks inside one tap.  Otherwise the kernel
// falls back to element-wise loads.
inline int chunks_aligned(const GemmProblem& pr, int64_t element_size) {
  const int64_t v = 16 / element_size;
  const auto aligned16 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return (pr.cin % v == 0 && pr.a_pixel_stride % v == 0 && aligned16(pr.a) && aligned16(pr.w)) ? 1 : 0;
}

inline void run_reduce_pool(const at::Tensor& x, const at::Tensor& w_red, const at::Tensor& b_red,
                            const at::Tensor& w_pool, const at::Tensor& b_pool, const at::Tensor& out,
                            const at::Tensor& scratch, bool allow_tf32, cudaStream_t stream) {
  const ReducePoolDims d = check_reduce_pool_args(x, w_red, b_red, w_pool, b_pool, out, scratch);
  const int64_t M = d.n * d.h * d.w;
  if (M == 0) return;
  // No-ops for the packed layouts the backend passes; copies otherwise.
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wr = w_red.contiguous();
  const at::Tensor br = b_red.contiguous();
  const at::Tensor wp = w_pool.contiguous();
  const at::Tensor bp = b_pool.contiguous();

  GemmLaunch p{};
  p.num_problems = 2;
  p.M = static_cast<int>(M);
  p.H = static_cast<int>(d.h);
  p.W = static_cast<int>(d.w);

  GemmProblem& red = p.prob[0];
  red.a = xc.data_ptr();
  red.a_pixel_stride = d.cin;
  red.cin = static_cast<int>(d.cin);
  red.ksize = 1;
  red.a_mode = kA1x1;
  red.w = wr.data_ptr();
  red.bias = br.data_ptr();
  red.nout = static_cast<int>(d.nred);
  red.dst0_cols = static_cast<int>(d.ch1);
  red.dst0 = out.data_ptr();
  red.dst0_row_stride = d.ctot;
  red.dst1 = scratch.data_ptr();
  red.dst1_row_stride = d.nscratch;
  red.vec = chunks_aligned(red, x.element_size());

  GemmProblem& pool = p.prob[1];
  pool.a = xc.data_ptr();
  pool.a_pixel_stride = d.cin;
  pool.cin = static_cast<int>(d.cin);
  pool.ksize = 1;  // the 3x3 window lives in the A loader; the GEMM itself is a 1x1
  pool.a_mode = kAMaxPool3;
  pool.w = wp.data_ptr();
  pool.bias = bp.data_ptr();
  pool.nout = static_cast<int>(d.npool);
  pool.dst0_cols = static_cast<int>(d.npool);
  pool.dst0 = mutable_element_ptr(out, d.pool_off);
  pool.dst0_row_stride = d.ctot;
  pool.dst1 = nullptr;
  pool.dst1_row_stride = 0;
  pool.vec = chunks_aligned(pool, x.element_size());

  launch_conv_gemm(p, gemm_mode_for(x.scalar_type(), allow_tf32), stream);
}

inline void run_branch_convs(const at::Tensor& scratch, const at::Tensor& w3, const at::Tensor& b3,
                             const at::Tensor& w5, const at::Tensor& b5, const at::Tensor& out, int64_t ch1,
                             bool allow_tf32, cudaStream_t stream) {
  const BranchConvDims d = check_branch_convs_args(scratch, w3, b3, w5, b5, out, ch1);
  const int64_t M = d.n * d.h * d.w;
  if (M == 0) return;
  const at::Tensor sc = scratch.contiguous(at::MemoryFormat::ChannelsLast);
  // channels_last OIHW memory is (Cout, kh, kw, Cin): the [Cout, k*k*Cin] B operand.
  const at::Tensor w3c = w3.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor w5c = w5.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor b3c = b3.contiguous();
  const at::Tensor b5c = b5.contiguous();

  GemmLaunch p{};
  p.num_problems = 2;
  p.M = static_cast<int>(M);
  p.H = static_cast<int>(d.h);
  p.W = static_cast<int>(d.w);

  const at::Tensor* weights[2] = {&w3c, &w5c};
  const at::Tensor* biases[2] = {&b3c, &b5c};
  const int64_t in_off[2] = {0, d.ch3red};
  const int64_t cin[2] = {d.ch3red, d.ch5red};
  const int64_t cout[2] = {d.ch3, d.ch5};
  const int64_t ksize[2] = {d.k3, d.k5};
  const int64_t out_off[2] = {ch1, ch1 + d.ch3};
  for (int q = 0; q < 2; ++q) {
    GemmProblem& pr = p.prob[q];
    pr.a = element_ptr(sc, in_off[q]);
    pr.a_pixel_stride = d.cs;
    pr.cin = static_cast<int>(cin[q]);
    pr.ksize = static_cast<int>(ksize[q]);
    pr.a_mode = kAConv;
    pr.w = weights[q]->data_ptr();
    pr.bias = biases[q]->data_ptr();
    pr.nout = static_cast<int>(cout[q]);
    pr.dst0_cols = pr.nout;
    pr.dst0 = mutable_element_ptr(out, out_off[q]);
    pr.dst0_row_stride = d.ctot;
    pr.dst1 = nullptr;
    pr.dst1_row_stride = 0;
    pr.vec = chunks_aligned(pr, scratch.element_size());
  }
  launch_conv_gemm(p, gemm_mode_for(scratch.scalar_type(), allow_tf32), stream);
}

}  // namespace inception_fast
