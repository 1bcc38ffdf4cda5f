// inception_fast::branch_convs_ on CPU (launch 2 of a fused Inception block).
//
// Reads scratch (N, ch3red + ch5red, H, W), the post-ReLU reductions written by
// launch 1, and computes
//   out[:, ch1 : ch1+ch3]            = relu(conv_k3(scratch[:, :ch3red], w3) + b3)
//   out[:, ch1+ch3 : ch1+ch3+ch5]    = relu(conv_k5(scratch[:, ch3red:], w5) + b5)
// with stride 1 and padding k/2 (k = 3 for w3; 3 in torchvision's variant or 5
// in the paper's for w5).  out is channels_last-contiguous; w3 / w5 are any
// layout (the packed ones are stored channels_last).  ATen's convolution does the
// arithmetic in fp32 (float16 / bfloat16 are widened first and rounded once
// when copied into out's slices).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"

namespace inception_fast {
namespace {

void conv_bias_relu_into(const at::Tensor& dst, const at::Tensor& src, const at::Tensor& w, const at::Tensor& b) {
  if (dst.numel() == 0) {
    return;
  }
  const int64_t pad = w.size(2) / 2;
  const at::Tensor y = at::conv2d(src, w.to(at::kFloat), b.to(at::kFloat), {1, 1}, {pad, pad}).relu_();
  dst.copy_(y);
}

void branch_convs_cpu(const at::Tensor& scratch, const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w5,
                      const at::Tensor& b5, at::Tensor& out, int64_t ch1) {
  const BranchConvDims d = check_branch_convs_args(scratch, w3, b3, w5, b5, out, ch1);
  if (d.n * d.h * d.w == 0) {
    return;
  }
  const at::Tensor sf = scratch.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  conv_bias_relu_into(out.narrow(1, ch1, d.ch3), sf.narrow(1, 0, d.ch3red), w3, b3);
  conv_bias_relu_into(out.narrow(1, ch1 + d.ch3, d.ch5), sf.narrow(1, d.ch3red, d.ch5red), w5, b5);
}

}  // namespace
}  // namespace inception_fast

TORCH_LIBRARY_IMPL(inception_fast, CPU, m) { m.impl("branch_convs_", &inception_fast::branch_convs_cpu); }
