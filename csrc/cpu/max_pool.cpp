// inception_fast::cpu_max_pool2d: a max pool on CPU for channels_last tensors,
// without the int64 argmax ATen's CPU pool always writes.
//
// Computes, for x (N, C, H, W) in float32 or bfloat16 and a square window
// (kernel k up to 8, stride s, padding p, PyTorch's ceil_mode rule, dilation
// 1),
//   out[n, c, oh, ow] = max over the window's in-bounds x[n, c, ih, iw]
// with padding acting as -inf, returned channels_last.  The window is scanned
// as ATen's pool scans it (rows, then columns) with ATen's update rule
// (take v where v > max or v is NaN), so the result equals ATen's bit for
// bit, the sign of zero included, with NaN where ATen has NaN (a NaN's own
// bits may differ: ATen's vector lanes write a bfloat16 NaN of their own).
// Each output pixel is a contiguous vector of C channels: the max runs over
// whole channel vectors in float32 (a bfloat16 value widens exactly and the
// winner narrows back exactly), with AVX-512 where the CPU has it (64 channels
// held in four registers across the window's taps), else one channel at a
// time (also where INCEPTION_FAST_NO_AVX512 is set).  Threads split the
// (n, oh) output rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/Pool.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace inception_fast {
namespace {

constexpr int64_t kMaxKernel = 8;
constexpr int64_t kMaxTaps = kMaxKernel * kMaxKernel;  // the tap array

// One output pixel: dst[c] = the max over the window's taps (pointers to each tap's channel 0),
// ATen's rule: v replaces the max where v > max or v is NaN.  The portable form.
template <typename T>
void pool_pixel_scalar(const T* const* taps, int64_t ntaps, int64_t c, T* dst) {
  for (int64_t i = 0; i < c; ++i) {
    float acc = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < ntaps; ++t) {
      const float v = static_cast<float>(taps[t][i]);
      if (v > acc || std::isnan(v)) {
        acc = v;
      }
    }
    dst[i] = static_cast<T>(acc);  // exact: acc is one of the inputs (a NaN stays NaN)
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define IF_HAVE_AVX512 1
#define IF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// 16 channels of a tap as float32 (bfloat16 widens exactly: its bits are float32's high half).
IF_AVX512 inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
IF_AVX512 inline __m512 load16(const c10::BFloat16* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
IF_AVX512 inline void store16(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
IF_AVX512 inline void store16(c10::BFloat16* p, __m512 v, __mmask16 m) {
  const __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16));  // exact
  _mm256_mask_storeu_epi16(p, m, h);
}
IF_AVX512 inline __m512 take_max(__m512 acc, __m512 v) {
  const __mmask16 take = _mm512_cmp_ps_mask(v, acc, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_blend_ps(take, acc, v);
}

// The AVX-512 form: 64 channels (four vectors) at a time held in registers across the taps,
// then 16 at a time, the last with a mask.
template <typename T>
IF_AVX512 void pool_pixel_avx512(const T* const* taps, int64_t ntaps, int64_t c, T* dst) {
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __mmask16 all = 0xFFFF;
  int64_t c0 = 0;
  for (; c0 + 64 <= c; c0 += 64) {
    __m512 a0 = lowest, a1 = lowest, a2 = lowest, a3 = lowest;
    for (int64_t t = 0; t < ntaps; ++t) {
      const T* p = taps[t] + c0;
      a0 = take_max(a0, load16(p, all));
      a1 = take_max(a1, load16(p + 16, all));
      a2 = take_max(a2, load16(p + 32, all));
      a3 = take_max(a3, load16(p + 48, all));
    }
    store16(dst + c0, a0, all);
    store16(dst + c0 + 16, a1, all);
    store16(dst + c0 + 32, a2, all);
    store16(dst + c0 + 48, a3, all);
  }
  for (; c0 < c; c0 += 16) {
    const __mmask16 m = c - c0 >= 16 ? all : static_cast<__mmask16>((1u << (c - c0)) - 1u);
    __m512 a = lowest;
    for (int64_t t = 0; t < ntaps; ++t) {
      a = take_max(a, load16(taps[t] + c0, m));
    }
    store16(dst + c0, a, m);
  }
}
#endif

// Whether the AVX-512 form runs: the CPU has AVX-512 F, BW and VL, and INCEPTION_FAST_NO_AVX512
// is unset, empty or "0" (set, the portable form runs: how the tests reach it on AVX-512 CPUs).
bool use_avx512() {
#ifdef IF_HAVE_AVX512
  static const bool cpu =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  const char* off = std::getenv("INCEPTION_FAST_NO_AVX512");
  return cpu && (off == nullptr || off[0] == '\0' || (off[0] == '0' && off[1] == '\0'));
#else
  return false;
#endif
}

template <typename T>
void pool_rows(const at::Tensor& x, at::Tensor& out, int64_t k, int64_t s, int64_t p) {
#ifdef IF_HAVE_AVX512
  const auto pool_pixel = use_avx512() ? &pool_pixel_avx512<T> : &pool_pixel_scalar<T>;
#else
  const auto pool_pixel = &pool_pixel_scalar<T>;
#endif
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t oh = out.size(2), ow = out.size(3);
  const T* src = x.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  at::parallel_for(0, n * oh, 1, [&](int64_t begin, int64_t end) {
    const T* taps[kMaxTaps];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / oh, y = row % oh;
      const int64_t y0 = std::max<int64_t>(y * s - p, 0), y1 = std::min<int64_t>(y * s - p + k, h);
      for (int64_t xo = 0; xo < ow; ++xo) {
        const int64_t x0 = std::max<int64_t>(xo * s - p, 0), x1 = std::min<int64_t>(xo * s - p + k, w);
        int64_t ntaps = 0;
        for (int64_t iy = y0; iy < y1; ++iy) {
          for (int64_t ix = x0; ix < x1; ++ix) {
            taps[ntaps++] = src + ((b * h + iy) * w + ix) * c;
          }
        }
        pool_pixel(taps, ntaps, c, dst + ((b * oh + y) * ow + xo) * c);
      }
    }
  });
}

at::Tensor cpu_max_pool2d(const at::Tensor& x, int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode) {
  const char* op = "inception_fast::cpu_max_pool2d";
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be on the CPU, got ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got ", x.dim(), "-D");
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16, op, ": x must be float32 or bfloat16, got ", st);
  TORCH_CHECK(kernel >= 1 && kernel <= kMaxKernel, op, ": kernel must be 1 to 8, got ", kernel);
  TORCH_CHECK(stride >= 1, op, ": stride must be at least 1, got ", stride);
  TORCH_CHECK(padding >= 0 && 2 * padding <= kernel, op, ": padding must be 0 to kernel / 2, got ", padding);
  // ATen's own output-size rule (rounding down, ceil_mode's last window inside the input).
  const int64_t oh = at::native::pooling_output_shape<int64_t>(x.size(2), kernel, padding, stride, 1, ceil_mode);
  const int64_t ow = at::native::pooling_output_shape<int64_t>(x.size(3), kernel, padding, stride, 1, ceil_mode);
  TORCH_CHECK(oh >= 1 && ow >= 1, op, ": input ", x.sizes(), " is too small for a ", kernel, "x", kernel, "/", stride,
              " max pool with padding ", padding);
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({x.size(0), x.size(1), oh, ow}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) {
    return out;
  }
  if (st == at::kFloat) {
    pool_rows<float>(xc, out, kernel, stride, padding);
  } else {
    pool_rows<c10::BFloat16>(xc, out, kernel, stride, padding);
  }
  return out;
}

}  // namespace
}  // namespace inception_fast

TORCH_LIBRARY_IMPL(inception_fast, CPU, m) { m.impl("cpu_max_pool2d", &inception_fast::cpu_max_pool2d); }
