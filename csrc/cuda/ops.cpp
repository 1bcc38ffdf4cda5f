// CUDA kernels of inception_fast::reduce_pool_ (launch 1) and
// inception_fast::branch_convs_ (launch 2): device guard, current stream and
// the choice of arithmetic around the shared setup in launch_ops.h, which
// describes both launches as problems of the tensor-core implicit GEMM in
// conv_gemm.cu.  bf16 / fp16 run on m16n8k16 tensor cores; fp32 runs on TF32
// tensor cores when torch.backends.cudnn.allow_tf32 is on (PyTorch's default
// for convolutions), else exactly with FFMA.  All accumulate in fp32.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "launch_ops.h"

namespace inception_fast {
namespace {

bool tf32_allowed() {
  // Without an operator name this query throws when the legacy and the new TF32
  // flags disagree; then the exact path is the safe answer.
  try {
    return at::globalContext().allowTF32CuDNN();
  } catch (const c10::Error&) {
    return false;
  }
}

void check_cuda(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": expected CUDA tensors, got one on ", t.device());
}

void reduce_pool_cuda(const at::Tensor& x, const at::Tensor& w_red, const at::Tensor& b_red, const at::Tensor& w_pool,
                      const at::Tensor& b_pool, at::Tensor& out, at::Tensor& scratch) {
  check_cuda("inception_fast::reduce_pool_", x);
  const c10::cuda::CUDAGuard guard(x.device());
  run_reduce_pool(x, w_red, b_red, w_pool, b_pool, out, scratch, tf32_allowed(),
                  c10::cuda::getCurrentCUDAStream().stream());
}

void branch_convs_cuda(const at::Tensor& scratch, const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w5,
                       const at::Tensor& b5, at::Tensor& out, int64_t ch1) {
  check_cuda("inception_fast::branch_convs_", scratch);
  const c10::cuda::CUDAGuard guard(scratch.device());
  run_branch_convs(scratch, w3, b3, w5, b5, out, ch1, tf32_allowed(), c10::cuda::getCurrentCUDAStream().stream());
}

}  // namespace
}  // namespace inception_fast

TORCH_LIBRARY_IMPL(inception_fast, CUDA, m) {
  m.impl("reduce_pool_", &inception_fast::reduce_pool_cuda);
  m.impl("branch_convs_", &inception_fast::branch_convs_cuda);
}
