// Argument checks shared by the CPU and CUDA implementations of the two launch
// ops (inception_fast::reduce_pool_ and inception_fast::branch_convs_).
//
// Both ops write into caller-allocated NHWC (channels_last-contiguous) buffers:
// a channel slice of `out` is a column block whose row stride is out.size(1),
// which is what lets every branch store straight into the concatenated output.
// The checks here turn every layout or shape mismatch into a TORCH_CHECK that
// names the op, the argument and the offending shape, instead of a silent
// out-of-bounds write.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

namespace inception_fast {

// Channel counts and sizes of launch 1, derived from the argument shapes.
struct ReducePoolDims {
  int64_t n, cin, h, w;
  int64_t nred;      // ch1 + ch3red + ch5red: rows of w_red
  int64_t ch1;       // columns [0, ch1) of the reduce GEMM go to out[:, 0:ch1]
  int64_t nscratch;  // ch3red + ch5red: the rest go to scratch
  int64_t npool;     // pool_proj
  int64_t ctot;      // out.size(1)
  int64_t pool_off;  // first channel of the pool slice: ctot - npool
};

// Channel counts and sizes of launch 2.
struct BranchConvDims {
  int64_t n, h, w;
  int64_t cs;              // scratch.size(1) = ch3red + ch5red
  int64_t ch3red, ch5red;  // input channels of the two convs (scratch slices)
  int64_t ch3, ch5;        // output channels
  int64_t k3, k5;          // square, odd kernel sizes; padding k/2 keeps H x W
  int64_t ctot, ch1;
};

inline void check_float_dtype(const char* op, const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, op, ": ", name,
              " must be float32, float16 or bfloat16, got ", st);
}

inline void check_same(const char* op, const at::Tensor& ref, const char* ref_name, const at::Tensor& t,
                       const char* name) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device(), "; all arguments must be on one device");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but ", ref_name,
              " has dtype ", ref.scalar_type(), "; all arguments must share one dtype");
}

// check_same for every (tensor, name) of `others`.
inline void check_all_same(const char* op, const at::Tensor& ref, const char* ref_name,
                           std::initializer_list<std::pair<const at::Tensor&, const char*>> others) {
  for (const auto& [t, name] : others) check_same(op, ref, ref_name, t, name);
}

// The kernels index pixels with 32 bits; a tile of headroom keeps the last tile's row indices in range too.
inline void check_pixel_count(const char* op, int64_t n, int64_t h, int64_t w) {
  TORCH_CHECK(n * h * w < (int64_t{1} << 31) - 256, op, ": N*H*W = ", n * h * w,
              " pixels is too many for one launch (limit 2^31)");
}

inline void check_nhwc_output(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be 4-D (N, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": ", name,
              " must be channels_last-contiguous (the kernel writes NHWC rows), got shape ", t.sizes(), " strides ",
              t.strides());
}

inline ReducePoolDims check_reduce_pool_args(const at::Tensor& x, const at::Tensor& w_red, const at::Tensor& b_red,
                                             const at::Tensor& w_pool, const at::Tensor& b_pool, const at::Tensor& out,
                                             const at::Tensor& scratch) {
  constexpr const char* op = "inception_fast::reduce_pool_";
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, Cin, H, W), got shape ", x.sizes());
  check_float_dtype(op, x, "x");
  check_all_same(
      op, x, "x",
      {{w_red, "w_red"}, {b_red, "b_red"}, {w_pool, "w_pool"}, {b_pool, "b_pool"}, {out, "out"}, {scratch, "scratch"}});
  check_nhwc_output(op, out, "out");
  check_nhwc_output(op, scratch, "scratch");

  ReducePoolDims d{};
  d.n = x.size(0);
  d.cin = x.size(1);
  d.h = x.size(2);
  d.w = x.size(3);
  TORCH_CHECK(w_red.dim() == 2 && w_red.size(1) == d.cin, op, ": w_red must be (ch1 + ch3red + ch5red, Cin=", d.cin,
              "), got shape ", w_red.sizes());
  TORCH_CHECK(w_pool.dim() == 2 && w_pool.size(1) == d.cin, op, ": w_pool must be (pool_proj, Cin=", d.cin,
              "), got shape ", w_pool.sizes());
  d.nred = w_red.size(0);
  d.npool = w_pool.size(0);
  TORCH_CHECK(b_red.dim() == 1 && b_red.size(0) == d.nred, op, ": b_red must have shape (", d.nred, "), got ",
              b_red.sizes());
  TORCH_CHECK(b_pool.dim() == 1 && b_pool.size(0) == d.npool, op, ": b_pool must have shape (", d.npool, "), got ",
              b_pool.sizes());
  TORCH_CHECK(out.size(0) == d.n && out.size(2) == d.h && out.size(3) == d.w, op, ": out must be (", d.n, ", C_total, ",
              d.h, ", ", d.w, ") like x, got shape ", out.sizes());
  TORCH_CHECK(scratch.size(0) == d.n && scratch.size(2) == d.h && scratch.size(3) == d.w, op, ": scratch must be (",
              d.n, ", ch3red + ch5red, ", d.h, ", ", d.w, ") like x, got shape ", scratch.sizes());
  d.nscratch = scratch.size(1);
  d.ch1 = d.nred - d.nscratch;
  TORCH_CHECK(d.ch1 >= 0, op, ": scratch has ", d.nscratch, " channels but w_red only ", d.nred,
              " rows; scratch holds the last ch3red + ch5red of them");
  d.ctot = out.size(1);
  d.pool_off = d.ctot - d.npool;
  TORCH_CHECK(d.pool_off >= d.ch1, op, ": out has ", d.ctot, " channels, too few for branch 1 (", d.ch1,
              ") plus the pool branch (", d.npool, ")");
  check_pixel_count(op, d.n, d.h, d.w);
  return d;
}

inline BranchConvDims check_branch_convs_args(const at::Tensor& scratch, const at::Tensor& w3, const at::Tensor& b3,
                                              const at::Tensor& w5, const at::Tensor& b5, const at::Tensor& out,
                                              int64_t ch1) {
  constexpr const char* op = "inception_fast::branch_convs_";
  TORCH_CHECK(scratch.dim() == 4, op, ": scratch must be 4-D (N, ch3red + ch5red, H, W), got shape ", scratch.sizes());
  check_float_dtype(op, scratch, "scratch");
  check_all_same(op, scratch, "scratch", {{w3, "w3"}, {b3, "b3"}, {w5, "w5"}, {b5, "b5"}, {out, "out"}});
  check_nhwc_output(op, out, "out");

  BranchConvDims d{};
  d.n = scratch.size(0);
  d.cs = scratch.size(1);
  d.h = scratch.size(2);
  d.w = scratch.size(3);
  TORCH_CHECK(w3.dim() == 4 && w3.size(2) == w3.size(3) && w3.size(2) % 2 == 1, op,
              ": w3 must be (ch3, ch3red, k, k) with odd k, got shape ", w3.sizes());
  TORCH_CHECK(w5.dim() == 4 && w5.size(2) == w5.size(3) && w5.size(2) % 2 == 1, op,
              ": w5 must be (ch5, ch5red, k, k) with odd k (3 or 5), got shape ", w5.sizes());
  d.ch3 = w3.size(0);
  d.ch3red = w3.size(1);
  d.k3 = w3.size(2);
  d.ch5 = w5.size(0);
  d.ch5red = w5.size(1);
  d.k5 = w5.size(2);
  TORCH_CHECK(d.ch3red + d.ch5red == d.cs, op, ": scratch has ", d.cs, " channels but w3 reads ", d.ch3red,
              " and w5 reads ", d.ch5red, "; scratch must hold exactly both reductions");
  TORCH_CHECK(b3.dim() == 1 && b3.size(0) == d.ch3, op, ": b3 must have shape (", d.ch3, "), got ", b3.sizes());
  TORCH_CHECK(b5.dim() == 1 && b5.size(0) == d.ch5, op, ": b5 must have shape (", d.ch5, "), got ", b5.sizes());
  TORCH_CHECK(out.size(0) == d.n && out.size(2) == d.h && out.size(3) == d.w, op, ": out must be (", d.n, ", C_total, ",
              d.h, ", ", d.w, ") like scratch, got shape ", out.sizes());
  d.ctot = out.size(1);
  d.ch1 = ch1;
  TORCH_CHECK(ch1 >= 0 && ch1 + d.ch3 + d.ch5 <= d.ctot, op, ": slices [", ch1, ", ", ch1 + d.ch3 + d.ch5,
              ") for the two convs do not fit in out's ", d.ctot, " channels");
  check_pixel_count(op, d.n, d.h, d.w);
  return d;
}

}  // namespace inception_fast
