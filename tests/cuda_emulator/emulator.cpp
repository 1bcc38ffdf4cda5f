// Test-only operators that run csrc/cuda/conv_gemm.cu's kernel source on the CPU
// through emulator.h, with exactly the host setup of the CUDA ops
// (csrc/cuda/launch_ops.h):
//   inception_fast_emu::reduce_pool_(..., bool allow_tf32)
//   inception_fast_emu::branch_convs_(..., bool allow_tf32)
//   inception_fast_emu::set_eager_copies(bool eager): cp.async lands at issue
//     (true) or when its group is waited for (false, the default)
// take CPU tensors laid out as the real ops expect.  Built on demand by
// tests/test_cuda_ext.py with torch.utils.cpp_extension.load.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "emulator.h"

#include "cuda/conv_gemm.cu"
#include "cuda/launch_ops.h"

namespace {

void emu_reduce_pool(const at::Tensor& x, const at::Tensor& w_red, const at::Tensor& b_red, const at::Tensor& w_pool,
                     const at::Tensor& b_pool, at::Tensor& out, at::Tensor& scratch, bool allow_tf32) {
  TORCH_CHECK(x.device().is_cpu(), "the emulator runs on CPU tensors");
  inception_fast::run_reduce_pool(x, w_red, b_red, w_pool, b_pool, out, scratch, allow_tf32, nullptr);
}

void emu_branch_convs(const at::Tensor& scratch, const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w5,
                      const at::Tensor& b5, at::Tensor& out, int64_t ch1, bool allow_tf32) {
  TORCH_CHECK(scratch.device().is_cpu(), "the emulator runs on CPU tensors");
  inception_fast::run_branch_convs(scratch, w3, b3, w5, b5, out, ch1, allow_tf32, nullptr);
}

void set_eager_copies(bool eager) { emu::eager_copies().store(eager); }

}  // namespace

TORCH_LIBRARY(inception_fast_emu, m) {
  m.def(
      "reduce_pool_(Tensor x, Tensor w_red, Tensor b_red, Tensor w_pool, Tensor b_pool, Tensor(a!) out, "
      "Tensor(b!) scratch, bool allow_tf32) -> ()");
  m.def(
      "branch_convs_(Tensor scratch, Tensor w3, Tensor b3, Tensor w5, Tensor b5, Tensor(a!) out, int ch1, "
      "bool allow_tf32) -> ()");
  m.def("set_eager_copies(bool eager) -> ()", &set_eager_copies);
  m.impl("reduce_pool_", c10::DispatchKey::CPU, TORCH_FN(emu_reduce_pool));
  m.impl("branch_convs_", c10::DispatchKey::CPU, TORCH_FN(emu_branch_convs));
}
