// inception_fast::reduce_pool_ on CPU (launch 1 of a fused Inception block).
//
// Computes, for x (N, Cin, H, W) and packed weights:
//   * the three 1x1 convs that read x as two GEMMs over x2d[N*H*W, Cin] with
//     the packed w_red, bias + ReLU: its first ch1 rows into out[:, 0:ch1], the
//     remaining ch3red + ch5red rows into scratch;
//   * the pool branch: ATen's 3x3 / stride 1 / pad 1 max pool (padding acts as
//     -inf) into a temporary, then the 1x1 w_pool + bias + ReLU, into out's last
//     pool_proj channels.
// out and scratch are channels_last-contiguous, so each channel slice is a
// strided [N*H*W, C_slice] matrix with row stride C_total, and the fp32 GEMMs
// write into those slices directly (addmm_out takes a leading dimension).
// float16 / bfloat16 inputs are computed in fp32 and rounded once on the way
// out, which is at least as accurate as a native low-precision CPU GEMM.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"

namespace inception_fast {
namespace {

// [N, C, H, W] channels_last -> the [N*H*W, C] matrix that shares its memory.
at::Tensor as_rows(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).view({-1, t.size(1)}); }

// dst[M, n] (a strided view, any dtype) = relu(a[M, K] @ w[n, K]^T + b), all of a, w, b fp32.
void gemm_bias_relu_into(const at::Tensor& dst, const at::Tensor& a, const at::Tensor& w, const at::Tensor& b) {
  if (dst.numel() == 0) {
    return;
  }
  if (dst.scalar_type() == at::kFloat) {
    at::Tensor d = dst;
    at::addmm_out(d, b, a, w.t());
    d.relu_();
  } else {
    dst.copy_(at::addmm(b, a, w.t()).relu_());
  }
}

void reduce_pool_cpu(const at::Tensor& x, const at::Tensor& w_red, const at::Tensor& b_red, const at::Tensor& w_pool,
                     const at::Tensor& b_pool, at::Tensor& out, at::Tensor& scratch) {
  const ReducePoolDims d = check_reduce_pool_args(x, w_red, b_red, w_pool, b_pool, out, scratch);
  if (d.n * d.h * d.w == 0) {
    return;
  }
  const auto f32 = at::kFloat;
  const at::Tensor xf = x.to(f32).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wr = w_red.to(f32).contiguous();
  const at::Tensor br = b_red.to(f32).contiguous();
  const at::Tensor wp = w_pool.to(f32).contiguous();
  const at::Tensor bp = b_pool.to(f32).contiguous();

  const at::Tensor x2d = as_rows(xf);
  const at::Tensor out2d = as_rows(out);
  const at::Tensor scratch2d = as_rows(scratch);

  gemm_bias_relu_into(out2d.narrow(1, 0, d.ch1), x2d, wr.narrow(0, 0, d.ch1), br.narrow(0, 0, d.ch1));
  gemm_bias_relu_into(scratch2d, x2d, wr.narrow(0, d.ch1, d.nscratch), br.narrow(0, d.ch1, d.nscratch));

  const at::Tensor pooled = at::max_pool2d(xf, {3, 3}, {1, 1}, {1, 1}).contiguous(at::MemoryFormat::ChannelsLast);
  gemm_bias_relu_into(out2d.narrow(1, d.pool_off, d.npool), as_rows(pooled), wp, bp);
}

}  // namespace
}  // namespace inception_fast

TORCH_LIBRARY_IMPL(inception_fast, CPU, m) { m.impl("reduce_pool_", &inception_fast::reduce_pool_cpu); }
