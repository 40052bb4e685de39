// Sliding Window Dilated Attention on the CPU: one pass over q, k and v.
//
// Built at first use by dilate_lab/ops/cpp_build.py (torch.utils.cpp_extension).
// q, k, v, out and the gradients are (B, heads, H, W, d) with any strides but the last:
// each is a Plane, pixel (image, i, j) of image = b*heads + h at b*sB + h*sh + i*sy + j*sx,
// its d channels side by side. So q, k and v can be read where MSDA's qkv projection put
// them, channels-last (B, H, W, 3, heads, d), with no copy; out and the gradients are
// written in the layout of q. Each head has its own dilation (MSDA's groups, one call).
// The weights are stored (B, heads, H, k*k, W): for each image row, one line of W
// weights per window position o = a*k + b, so that the softmax runs along lines.
//
// The work unit is one image row i of one image: its W queries, their k*k logits
// (kept in the weights tensor), the softmax and the output row all stay in the L1
// and L2 caches, so memory sees q, k, v once, out once and the weights once.
//
// Forward, for each query (i, j) and window position o = (a, b), key (ii, jj) =
// (i + (a - k//2) r, j + (b - k//2) r):
//   l_o   = (scale q_ij) . k_{ii jj}            key inside the map
//   l_o   = (scale q_ij) . 0 ("zeros": 0, or NaN if q_ij is not finite, as with
//           nn.Unfold) / left out ("mask")     key beyond the border
//   w     = softmax(l)       (stored: the same weights as the unfold form, zero-padded keys
//                             included, so a tracer sees the paper's softmax)
//   out_ij = sum_o w_o v_{ii jj}, over keys inside the map (a zero-padded value adds nothing)
// Backward (g = dL/dout), two passes, so that no thread writes another's rows:
//   pass 1, per query:  da_o = g_ij . v_{ii jj} (0 beyond the border),
//                       dl_o = scale * w_o (da_o - sum_p w_p da_p),
//                       dq_ij = sum_o dl_o k_{ii jj}, keys inside   (dl is stored like w)
//   pass 2, per key:    dk_ij = sum_o dl_o(query) q_query,  dv_ij = sum_o w_o(query) g_query,
//                       over the queries (i - (a - k//2) r, j - (b - k//2) r) inside the map.
// Keys beyond the border are never read: a value reaches only the pixels whose
// windows hold it, exactly as with nn.Unfold's zero padding, NaN and inf included.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

// Unrolled head sizes are multiples of kLanes: their loops run over kLanes-wide
// chunks held in GCC/Clang vector types, one vector register of floats on AVX2.
constexpr int64_t kLanes = 8;

struct Geometry {
  int64_t images;  // B * heads
  int64_t heads;
  int64_t height;
  int64_t width;
  int64_t dim;  // head_dim
  int64_t kernel;
  int64_t dilation;
  bool mask;  // padding == "mask": keys beyond the border leave the softmax

  int64_t positions() const { return kernel * kernel; }
  // distance between two lines of weights: W rounded up to whole vectors, so that the
  // softmax runs over full vectors (the few extra entries are computed, never used)
  int64_t stride() const { return (width + kLanes - 1) / kLanes * kLanes; }
  // offset of window row a (or column b) from the query, in pixels
  int64_t step(int64_t a) const { return (a - kernel / 2) * dilation; }
};

// Where one (B, heads, H, W, d) tensor's pixels are: strides in elements; channels at stride 1.
struct Plane {
  int64_t heads, batch, head, row, pixel;
  // offset of pixel row i of image (= b*heads + h)
  int64_t at(int64_t image, int64_t i) const {
    return (image / heads) * batch + (image % heads) * head + i * row;
  }
};

Plane plane_of(const torch::Tensor& t) {
  return Plane{t.size(1), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The geometry of one image: its head's dilation.
Geometry of_image(const Geometry& g, const std::vector<int64_t>& dilations, int64_t image) {
  Geometry gi = g;
  gi.dilation = dilations[image % g.heads];
  return gi;
}

// Kernel sizes beyond this are refused (k = 31 is already 961 positions per query).
constexpr int64_t kMaxKernel = 63;

// The smallest share of a call, in multiply-adds, that is given a thread of its own.
// Every parallel region ends at a barrier where OpenMP's threads spin-wait: on an idle
// CPU that costs microseconds, but while another process keeps the cores busy, a thread
// that lost its core holds the barrier for a whole scheduler time slice (milliseconds),
// and a training step makes hundreds of small calls (a 3-epoch run went from 7 s to
// over 110 s). Calls smaller than this run on the calling thread, without a parallel
// region, as PyTorch's own operators do below their grain size; at DilateFormer's
// stage-1 layout a call is hundreds of times larger and still splits across all threads.
constexpr int64_t kMinTaskWork = int64_t(1) << 18;

// Image rows per task: enough rows that a task holds kMinTaskWork multiply-adds (one
// row: W queries times k*k window positions times head_dim).
int64_t rows_per_task(int64_t width, int64_t positions, int64_t dim) {
  const int64_t row_work = std::max<int64_t>(1, width * positions * dim);
  return std::max<int64_t>(1, (kMinTaskWork + row_work - 1) / row_work);
}

template <typename T>
struct LanesOf;
template <>
struct LanesOf<float> {
  typedef float type __attribute__((vector_size(kLanes * sizeof(float))));
};
template <>
struct LanesOf<double> {
  typedef double type __attribute__((vector_size(kLanes * sizeof(double))));
};
template <typename T>
using Lanes = typename LanesOf<T>::type;

template <typename T>
inline Lanes<T> load_lanes(const T* p) {
  Lanes<T> x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

template <typename T>
inline void store_lanes(T* p, Lanes<T> x) {
  std::memcpy(p, &x, sizeof x);
}

// (scale a) . b, for head sizes known only at run time (the unrolled ones go through
// query_logits' vectors).
template <typename T, int64_t D>
inline T scaled_dot(T scale, const T* __restrict a, const T* __restrict b, int64_t d) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < d; ++c) sum += (scale * a[c]) * b[c];
  return sum;
}

template <typename T, int64_t D>
inline void add_scaled(T weight, const T* __restrict x, T* __restrict y, int64_t d) {
  const int64_t n = D > 0 ? D : d;
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) y[c] += weight * x[c];
}


// exp(x) for x <= 0 (the softmax's logits minus their maximum), kLanes at a time.
// float: a range reduction x = n ln2 + t (n rounded to nearest by adding and
// subtracting 1.5 * 2^23) and a degree-6 polynomial (about 1 ulp, Cephes' expf), in
// vector arithmetic; NaN stays NaN, results down to expf's smallest subnormal (x of
// about -103.97) are kept, and x < -104 gives 0.
inline Lanes<float> exp_nonpositive(Lanes<float> x) {
  typedef int32_t Ints __attribute__((vector_size(kLanes * sizeof(int32_t))));
  const Lanes<float> clamped = x < -104.0f ? -104.0f + Lanes<float>{} : x;  // NaN stays NaN
  const Lanes<float> n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const Lanes<float> t = (clamped - n * 0.693359375f) + n * 2.12194440e-4f;
  Lanes<float> p = 1.9875691500e-4f + Lanes<float>{};
  p = p * t + 1.3981999507e-3f;
  p = p * t + 8.3334519073e-3f;
  p = p * t + 4.1665795894e-2f;
  p = p * t + 1.6666665459e-1f;
  p = p * t + 5.0000001201e-1f;
  p = p * t * t + t + 1.0f;
  // 2^n for n in [-150, 0] as two normal powers 2^(n/2) 2^(n - n/2): results below
  // 2^-126 come out subnormal, as from expf, instead of 0
  const Ints whole = __builtin_convertvector(n, Ints);
  const Ints half = whole >> 1;
  const Ints bits_a = (half + 127) << 23, bits_b = (whole - half + 127) << 23;
  const Lanes<float> result = (p * reinterpret_cast<const Lanes<float>&>(bits_a)) *
                              reinterpret_cast<const Lanes<float>&>(bits_b);
  return x < -104.0f ? Lanes<float>{} : result;
}
inline Lanes<double> exp_nonpositive(Lanes<double> x) {
  for (int64_t l = 0; l < kLanes; ++l) x[l] = std::exp(x[l]);
  return x;
}

// Softmax over the k*k lines of one image row (stride S, a multiple of kLanes), in
// place, kLanes queries at a time: their maximum and sum stay in registers.
template <typename T>
void softmax_lines(T* lines, const Geometry& g) {
  const int64_t S = g.stride(), kk = g.positions();
  for (int64_t j = 0; j < S; j += kLanes) {
    Lanes<T> top = load_lanes(lines + j);
    for (int64_t o = 1; o < kk; ++o) {
      const Lanes<T> l = load_lanes(lines + o * S + j);
      top = l > top ? l : top;  // a NaN logit is skipped here, and makes the sum NaN below
    }
    Lanes<T> total = {};
    for (int64_t o = 0; o < kk; ++o) {
      const Lanes<T> e = exp_nonpositive(load_lanes(lines + o * S + j) - top);
      store_lanes(lines + o * S + j, e);
      total += e;
    }
    const Lanes<T> inverse = T(1) / total;
    for (int64_t o = 0; o < kk; ++o)
      store_lanes(lines + o * S + j, load_lanes(lines + o * S + j) * inverse);
  }
}

// The lane sums of eight vectors, as one vector: element o is p[o][0] + ... + p[o][7].
// Three rounds of pairwise shuffles and adds replace eight separate reductions.
template <typename T>
inline Lanes<T> lane_sums(const Lanes<T>* p) {
  const Lanes<T> q0 = __builtin_shufflevector(p[0], p[1], 0, 8, 2, 10, 4, 12, 6, 14) +
                      __builtin_shufflevector(p[0], p[1], 1, 9, 3, 11, 5, 13, 7, 15);
  const Lanes<T> q1 = __builtin_shufflevector(p[2], p[3], 0, 8, 2, 10, 4, 12, 6, 14) +
                      __builtin_shufflevector(p[2], p[3], 1, 9, 3, 11, 5, 13, 7, 15);
  const Lanes<T> q2 = __builtin_shufflevector(p[4], p[5], 0, 8, 2, 10, 4, 12, 6, 14) +
                      __builtin_shufflevector(p[4], p[5], 1, 9, 3, 11, 5, 13, 7, 15);
  const Lanes<T> q3 = __builtin_shufflevector(p[6], p[7], 0, 8, 2, 10, 4, 12, 6, 14) +
                      __builtin_shufflevector(p[6], p[7], 1, 9, 3, 11, 5, 13, 7, 15);
  const Lanes<T> r0 = __builtin_shufflevector(q0, q1, 0, 1, 8, 9, 4, 5, 12, 13) +
                      __builtin_shufflevector(q0, q1, 2, 3, 10, 11, 6, 7, 14, 15);
  const Lanes<T> r1 = __builtin_shufflevector(q2, q3, 0, 1, 8, 9, 4, 5, 12, 13) +
                      __builtin_shufflevector(q2, q3, 2, 3, 10, 11, 6, 7, 14, 15);
  return __builtin_shufflevector(r0, r1, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(r0, r1, 4, 5, 6, 7, 12, 13, 14, 15);
}

// zero_keys: a key beyond the border is a zero vector, scored (scale q) . 0 -- that is 0,
// or NaN where q holds an inf or NaN, exactly as nn.Unfold's zero padding; otherwise
// such a key gets the constant `beyond` (-inf for "mask", 0 for the backward's da).
template <typename T, int64_t D, int64_t K, bool Interior>
inline void query_logits(const T* __restrict q_j, const T* const* k_rows, int64_t kx, int64_t j,
                         const Geometry& g, T scale, T beyond, bool zero_keys,
                         T* __restrict lines) {
  const int64_t W = g.width, d = D > 0 ? D : g.dim, ks = K > 0 ? K : g.kernel;
  const int64_t S = g.stride();
  const int64_t r = g.dilation, half = ks / 2, kk = ks * ks;
  if constexpr (D > 0 && D % kLanes == 0 && K > 0) {
    // the k*k products as vectors first, then their sums eight at a time
    constexpr int64_t kBlocks = (K * K + kLanes - 1) / kLanes;
    Lanes<T> parts[kBlocks * kLanes] = {};
    bool inside[K * K];
    Lanes<T> q_lanes[D / kLanes];
    // q is scaled first, as scale * (q . k) could overflow where (scale q) . k does not
    for (int64_t c = 0; c < D / kLanes; ++c) q_lanes[c] = load_lanes(q_j + c * kLanes) * scale;
    if (!Interior && zero_keys) {
      Lanes<T> zero_products = q_lanes[0] * T(0);
      for (int64_t c = 1; c < D / kLanes; ++c) zero_products += q_lanes[c] * T(0);
      T sum = 0;
      for (int64_t l = 0; l < kLanes; ++l) sum += zero_products[l];
      beyond = sum;  // 0, or NaN
    }
    for (int64_t a = 0; a < K; ++a) {
      const T* __restrict k_row = k_rows[a];
      for (int64_t b = 0; b < K; ++b) {
        const int64_t jj = j + (b - half) * r, o = a * K + b;
        inside[o] = Interior || (k_row != nullptr && jj >= 0 && jj < W);
        if (!inside[o]) continue;
        const T* __restrict key = k_row + jj * kx;
        Lanes<T> part = q_lanes[0] * load_lanes(key);
        for (int64_t c = 1; c < D / kLanes; ++c) part += q_lanes[c] * load_lanes(key + c * kLanes);
        parts[o] = part;
      }
    }
    for (int64_t block = 0; block < kBlocks; ++block) {
      const Lanes<T> sums = lane_sums<T>(parts + block * kLanes);
      for (int64_t l = 0; l < kLanes && block * kLanes + l < kk; ++l) {
        const int64_t o = block * kLanes + l;
        lines[o * S] = inside[o] ? sums[l] : beyond;
      }
    }
  } else {
    if (!Interior && zero_keys) {
      T sum = 0;
      for (int64_t c = 0; c < d; ++c) sum += (scale * q_j[c]) * T(0);
      beyond = sum;  // 0, or NaN
    }
    for (int64_t a = 0; a < ks; ++a) {
      const T* __restrict k_row = k_rows[a];
      for (int64_t b = 0; b < ks; ++b) {
        const int64_t jj = j + (b - half) * r;
        const bool inside = Interior || (k_row != nullptr && jj >= 0 && jj < W);
        lines[(a * ks + b) * S] = inside ? scaled_dot<T, D>(scale, q_j, k_row + jj * kx, d) : beyond;
      }
    }
  }
}

template <typename T, int64_t D, int64_t K, bool Interior>
inline void query_output(const T* __restrict lines, const T* const* v_rows, int64_t vx, int64_t j,
                         const Geometry& g, T* __restrict out_j) {
  const int64_t W = g.width, d = D > 0 ? D : g.dim, ks = K > 0 ? K : g.kernel;
  const int64_t S = g.stride();
  const int64_t r = g.dilation, half = ks / 2;
  if constexpr (D > 0 && D % kLanes == 0) {
    // the whole d-vector output in registers (D / kLanes vectors), summed over the window
    Lanes<T> sum[D / kLanes] = {};
    for (int64_t a = 0; a < ks; ++a) {
      const T* __restrict v_row = v_rows[a];
      if (!Interior && v_row == nullptr) continue;
      for (int64_t b = 0; b < ks; ++b) {
        const int64_t jj = j + (b - half) * r;
        if (!Interior && (jj < 0 || jj >= W)) continue;
        const T w = lines[(a * ks + b) * S];
        const T* __restrict value = v_row + jj * vx;
        for (int64_t c = 0; c < D / kLanes; ++c) sum[c] += w * load_lanes(value + c * kLanes);
      }
    }
    for (int64_t c = 0; c < D / kLanes; ++c) store_lanes(out_j + c * kLanes, sum[c]);
  } else {
    std::fill(out_j, out_j + d, T(0));
    for (int64_t a = 0; a < ks; ++a) {
      const T* __restrict v_row = v_rows[a];
      if (v_row == nullptr) continue;
      for (int64_t b = 0; b < ks; ++b) {
        const int64_t jj = j + (b - half) * r;
        if (jj >= 0 && jj < W) add_scaled<T, D>(lines[(a * ks + b) * S], v_row + jj * vx, out_j, d);
      }
    }
  }
}

// Calls f(Interior) for the queries of an image row: f(false) for j in [0, first) and
// [last, W), f(true) between, where every window position is on the map.
template <typename Rows, typename F>
void by_border(const Geometry& g, const Rows& rows, const F& f) {
  bool rows_inside = true;
  for (int64_t a = 0; a < g.kernel; ++a) rows_inside = rows_inside && rows[a] != nullptr;
  const int64_t W = g.width, reach = (g.kernel / 2) * g.dilation;
  const int64_t first = rows_inside ? std::min(reach, W) : W;
  const int64_t last = rows_inside ? std::max(first, W - reach) : W;
  f(std::false_type(), 0, first);
  f(std::true_type(), first, last);
  f(std::false_type(), last, W);
}

// The tensors of one call, each with its Plane.
template <typename T>
struct Tensors {
  const T* q; Plane pq;
  const T* k; Plane pk;
  const T* v; Plane pv;
};

template <typename T, int64_t D, int64_t K>
void forward_rows(const Tensors<T>& in, T* out, Plane po, T* weights, const Geometry& g,
                  const std::vector<int64_t>& dilations, T scale) {
  const int64_t H = g.height, W = g.width, d = D > 0 ? D : g.dim, kk = g.positions();
  const int64_t S = g.stride();
  const T beyond = g.mask ? -std::numeric_limits<T>::infinity() : T(0);
  at::parallel_for(0, g.images * H, rows_per_task(W, kk, d), [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(weights == nullptr ? kk * S : 0);  // the lines, when not kept
    for (int64_t unit = begin; unit < end; ++unit) {  // unit = image*H + i: one image row
      const int64_t image = unit / H, i = unit % H;
      const Geometry gi = of_image(g, dilations, image);
      const T* q_row = in.q + in.pq.at(image, i);
      T* lines = weights != nullptr ? weights + unit * kk * S : scratch.data();  // k*k, S
      // logits, one query at a time (its q stays in registers)
      const T* k_rows[kMaxKernel];  // the key row of each window row; nullptr beyond the border
      for (int64_t a = 0; a < gi.kernel; ++a) {
        const int64_t ii = i + gi.step(a);
        k_rows[a] = (ii >= 0 && ii < H) ? in.k + in.pk.at(image, ii) : nullptr;
      }
      // queries whose whole window is on the map take a copy of the code without checks
      by_border(gi, k_rows, [&](auto interior, int64_t from, int64_t to) {
        for (int64_t j = from; j < to; ++j)
          query_logits<T, D, K, decltype(interior)::value>(q_row + j * in.pq.pixel, k_rows,
                                                           in.pk.pixel, j, gi, scale, beyond,
                                                           !gi.mask, lines + j);
      });
      for (int64_t o = 0; o < kk; ++o) std::fill(lines + o * S + W, lines + (o + 1) * S, T(0));
      softmax_lines(lines, gi);
      // weighted sum of values, one query at a time (its output stays in registers)
      const T* v_rows[kMaxKernel];
      for (int64_t a = 0; a < gi.kernel; ++a) {
        const int64_t ii = i + gi.step(a);
        v_rows[a] = (ii >= 0 && ii < H) ? in.v + in.pv.at(image, ii) : nullptr;
      }
      T* out_row = out + po.at(image, i);
      by_border(gi, v_rows, [&](auto interior, int64_t from, int64_t to) {
        for (int64_t j = from; j < to; ++j)
          query_output<T, D, K, decltype(interior)::value>(lines + j, v_rows, in.pv.pixel, j, gi,
                                                           out_row + j * po.pixel);
      });
    }
  });
}

// dk_j and dv_j of key j of an image row: summed over the queries whose windows hold
// it. Query of window position o = (a, b): row q_rows[a] (nullptr beyond the border),
// column j - (b - k//2) r; its line o of dl / w is dl_rows[a] + o*S / w_rows[a] + o*S.
// qx, gx: the pixel strides of q and of the output's gradient.
template <typename T, int64_t D, int64_t K, bool Interior>
inline void key_gradients(int64_t j, const T* const* q_rows, int64_t qx, const T* const* g_rows,
                          int64_t gx, const T* const* dl_rows, const T* const* w_rows,
                          const Geometry& g, T* __restrict dk_j, T* __restrict dv_j) {
  const int64_t W = g.width, d = D > 0 ? D : g.dim, ks = K > 0 ? K : g.kernel;
  const int64_t S = g.stride();
  const int64_t r = g.dilation, half = ks / 2;
  if constexpr (D > 0 && D % kLanes == 0) {
    Lanes<T> dk[D / kLanes] = {}, dv[D / kLanes] = {};
    for (int64_t a = 0; a < ks; ++a) {
      if (!Interior && q_rows[a] == nullptr) continue;
      for (int64_t b = 0; b < ks; ++b) {
        const int64_t jq = j - (b - half) * r, o = a * ks + b;
        if (!Interior && (jq < 0 || jq >= W)) continue;
        const T dl = dl_rows[a][o * S + jq], w = w_rows[a][o * S + jq];
        const T* __restrict query = q_rows[a] + jq * qx;
        const T* __restrict grad = g_rows[a] + jq * gx;
        for (int64_t c = 0; c < D / kLanes; ++c) {
          dk[c] += dl * load_lanes(query + c * kLanes);
          dv[c] += w * load_lanes(grad + c * kLanes);
        }
      }
    }
    for (int64_t c = 0; c < D / kLanes; ++c) {
      store_lanes(dk_j + c * kLanes, dk[c]);
      store_lanes(dv_j + c * kLanes, dv[c]);
    }
  } else {
    std::fill(dk_j, dk_j + d, T(0));
    std::fill(dv_j, dv_j + d, T(0));
    for (int64_t a = 0; a < ks; ++a) {
      if (q_rows[a] == nullptr) continue;
      for (int64_t b = 0; b < ks; ++b) {
        const int64_t jq = j - (b - half) * r, o = a * ks + b;
        if (jq < 0 || jq >= W) continue;
        add_scaled<T, D>(dl_rows[a][o * S + jq], q_rows[a] + jq * qx, dk_j, d);
        add_scaled<T, D>(w_rows[a][o * S + jq], g_rows[a] + jq * gx, dv_j, d);
      }
    }
  }
}

// The gradients' tensors: written in the planes of q, k and v.
template <typename T>
struct Gradients {
  T* q; Plane pq;
  T* k; Plane pk;
  T* v; Plane pv;
};

template <typename T, int64_t D, int64_t K>
void backward_rows(const Tensors<T>& in, const T* weights, const T* grad_out, Plane pg,
                   const Gradients<T>& grads, T* grad_logits, const Geometry& g,
                   const std::vector<int64_t>& dilations, T scale) {
  const int64_t H = g.height, W = g.width, d = D > 0 ? D : g.dim, kk = g.positions();
  const int64_t S = g.stride();
  // pass 1, per query row: the gradient of the logits, and dq
  at::parallel_for(0, g.images * H, rows_per_task(W, kk, d), [&](int64_t begin, int64_t end) {
    std::vector<T> expected(W);  // sum_p w_p da_p
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t image = unit / H, i = unit % H;
      const Geometry gi = of_image(g, dilations, image);
      const T* g_row = grad_out + pg.at(image, i);
      const T* w_lines = weights + unit * kk * S;  // k*k, S
      T* dl_lines = grad_logits + unit * kk * S;   // k*k, S: first da, then dl
      const T* k_rows[kMaxKernel];
      const T* v_rows[kMaxKernel];
      for (int64_t a = 0; a < gi.kernel; ++a) {
        const int64_t ii = i + gi.step(a);
        const bool inside = ii >= 0 && ii < H;
        k_rows[a] = inside ? in.k + in.pk.at(image, ii) : nullptr;
        v_rows[a] = inside ? in.v + in.pv.at(image, ii) : nullptr;
      }
      // da_o = g . v_o: the logits' computation with g for q and v for k (0 beyond the border)
      by_border(gi, v_rows, [&](auto interior, int64_t from, int64_t to) {
        for (int64_t j = from; j < to; ++j)
          query_logits<T, D, K, decltype(interior)::value>(g_row + j * pg.pixel, v_rows,
                                                           in.pv.pixel, j, gi, T(1), T(0), false,
                                                           dl_lines + j);
      });
      std::fill(expected.begin(), expected.end(), T(0));
      for (int64_t o = 0; o < kk; ++o) {
        const T* w = w_lines + o * S;
        const T* da = dl_lines + o * S;
#pragma omp simd
        for (int64_t j = 0; j < W; ++j) expected[j] += w[j] * da[j];
      }
      for (int64_t o = 0; o < kk; ++o) {
        const T* w = w_lines + o * S;
        T* dl = dl_lines + o * S;
#pragma omp simd
        for (int64_t j = 0; j < W; ++j) dl[j] = scale * w[j] * (dl[j] - expected[j]);
      }
      // dq_j = sum_o dl_o k_o: the weighted sum of the forward, with dl for w and k for v
      T* dq_row = grads.q + grads.pq.at(image, i);
      by_border(gi, k_rows, [&](auto interior, int64_t from, int64_t to) {
        for (int64_t j = from; j < to; ++j)
          query_output<T, D, K, decltype(interior)::value>(dl_lines + j, k_rows, in.pk.pixel, j,
                                                           gi, dq_row + j * grads.pq.pixel);
      });
    }
  });
  // pass 2, per key row: gather from the queries whose windows hold each key
  at::parallel_for(0, g.images * H, rows_per_task(W, kk, d), [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t image = unit / H, i = unit % H;
      const Geometry gi = of_image(g, dilations, image);
      const T* q_rows[kMaxKernel];
      const T* g_rows[kMaxKernel];
      const T* dl_rows[kMaxKernel];
      const T* w_rows[kMaxKernel];
      for (int64_t a = 0; a < gi.kernel; ++a) {
        const int64_t qi = i - gi.step(a);  // the query row that sees this row at window row a
        const bool inside = qi >= 0 && qi < H;
        const int64_t query_unit = image * H + qi;
        q_rows[a] = inside ? in.q + in.pq.at(image, qi) : nullptr;
        g_rows[a] = inside ? grad_out + pg.at(image, qi) : nullptr;
        dl_rows[a] = inside ? grad_logits + query_unit * kk * S : nullptr;
        w_rows[a] = inside ? weights + query_unit * kk * S : nullptr;
      }
      T* dk_row = grads.k + grads.pk.at(image, i);
      T* dv_row = grads.v + grads.pv.at(image, i);
      by_border(gi, q_rows, [&](auto interior, int64_t from, int64_t to) {
        for (int64_t j = from; j < to; ++j)
          key_gradients<T, D, K, decltype(interior)::value>(
              j, q_rows, in.pq.pixel, g_rows, pg.pixel, dl_rows, w_rows, gi,
              dk_row + j * grads.pk.pixel, dv_row + j * grads.pv.pixel);
      });
    }
  });
}

template <int64_t V>
using Fixed = std::integral_constant<int64_t, V>;

// Calls f(Fixed<d>) for the common head sizes, so that the compiler unrolls the
// d-long loops; f(Fixed<0>) (size known at run time) otherwise.
template <typename F>
void with_head_dim(int64_t d, const F& f) {
  switch (d) {
    case 8: return f(Fixed<8>());
    case 16: return f(Fixed<16>());
    case 24: return f(Fixed<24>());
    case 32: return f(Fixed<32>());
    case 48: return f(Fixed<48>());
    case 64: return f(Fixed<64>());
    default: return f(Fixed<0>());
  }
}

// Calls f(Fixed<d or 0>, Fixed<3 or 0>): DilateFormer's kernel 3 unrolled too.
template <typename F>
void with_sizes(const Geometry& g, const F& f) {
  with_head_dim(g.dim, [&](auto head_dim) {
    if (g.kernel == 3) return f(head_dim, Fixed<3>());
    return f(head_dim, Fixed<0>());
  });
}

Geometry geometry_of(const torch::Tensor& q, int64_t kernel, const std::vector<int64_t>& dilations,
                     bool mask) {
  TORCH_CHECK(q.dim() == 5, "q must be (B, heads, H, W, head_dim)");
  TORCH_CHECK(kernel >= 1 && kernel % 2 == 1 && kernel <= kMaxKernel,
              "kernel_size must be odd, in [1, ", kMaxKernel, "]");
  TORCH_CHECK(static_cast<int64_t>(dilations.size()) == q.size(1),
              "dilations must hold one dilation per head");
  for (int64_t r : dilations) TORCH_CHECK(r >= 1, "every dilation must be positive");
  return Geometry{q.size(0) * q.size(1), q.size(1), q.size(2), q.size(3), q.size(4), kernel,
                  dilations[0], mask};
}

void check_like(const torch::Tensor& t, const torch::Tensor& q, const char* name) {
  TORCH_CHECK(t.sizes() == q.sizes() && t.scalar_type() == q.scalar_type() && t.device() == q.device()
                  && (t.size(4) == 1 || t.stride(4) == 1),
              name, " must have the shape, dtype and device of q, its channels side by side");
}

// A new tensor like t in the order of its pixels: (B, H, W, heads, d) in memory when t's
// heads sit inside its pixels (a view of a channels-last projection), else contiguous
// (B, heads, H, W, d). The same rule as _like_layout in ops/cpp.py, the operator's fake.
torch::Tensor empty_in_layout_of(const torch::Tensor& t, at::ScalarType dtype) {
  if (t.size(1) > 1 && t.stride(1) < t.stride(3)) {
    return torch::empty({t.size(0), t.size(2), t.size(3), t.size(1), t.size(4)},
                        t.options().dtype(dtype))
        .permute({0, 3, 1, 2, 4});
  }
  return torch::empty(t.sizes(), t.options().dtype(dtype));
}

template <typename T>
Tensors<T> inputs_of(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  return Tensors<T>{q.data_ptr<T>(), plane_of(q), k.data_ptr<T>(), plane_of(k),
                    v.data_ptr<T>(), plane_of(v)};
}

// Returns (out, weights): out (B, heads, H, W, d) in the layout of q, weights (B, heads, H,
// k*k, stride) (stride: W rounded up to a multiple of kLanes; entries from W on are
// padding), or an empty tensor without keep_weights (inference: the lines then live in a
// per-thread scratch buffer of one image row's k*k lines -- in the L1 cache for k = 3 --
// and nothing k*k-sized reaches memory). dilations: one per head.
std::vector<torch::Tensor> swda_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                        int64_t kernel, std::vector<int64_t> dilations, bool mask,
                                        double scale, bool keep_weights) {
  TORCH_CHECK(q.device().is_cpu(), "q must be on the CPU");
  check_like(q, q, "q");
  check_like(k, q, "k");
  check_like(v, q, "v");
  const Geometry g = geometry_of(q, kernel, dilations, mask);
  auto out = empty_in_layout_of(q, q.scalar_type());
  auto weights = keep_weights
                     ? torch::empty({q.size(0), q.size(1), q.size(2), kernel * kernel, g.stride()},
                                    q.options())
                     : torch::empty({0}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "swda_forward", [&] {
    with_sizes(g, [&](auto head_dim, auto kernel_size) {
      forward_rows<scalar_t, decltype(head_dim)::value, decltype(kernel_size)::value>(
          inputs_of<scalar_t>(q, k, v), out.data_ptr<scalar_t>(), plane_of(out),
          keep_weights ? weights.data_ptr<scalar_t>() : nullptr, g, dilations,
          static_cast<scalar_t>(scale));
    });
  });
  return {out, weights};
}

// Returns (grad_q, grad_k, grad_v), each in the layout of q, k and v.
std::vector<torch::Tensor> swda_backward(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                         torch::Tensor weights, torch::Tensor grad_out,
                                         int64_t kernel, std::vector<int64_t> dilations,
                                         bool mask, double scale) {
  TORCH_CHECK(q.device().is_cpu(), "q must be on the CPU");
  check_like(q, q, "q");
  check_like(k, q, "k");
  check_like(v, q, "v");
  check_like(grad_out, q, "grad_out");
  const Geometry g = geometry_of(q, kernel, dilations, mask);
  TORCH_CHECK(weights.is_contiguous() && weights.scalar_type() == q.scalar_type()
                  && weights.numel() == g.images * g.height * g.stride() * kernel * kernel,
              "weights must be the contiguous (B, heads, H, k*k, stride) weights of the forward");
  auto grad_q = empty_in_layout_of(q, q.scalar_type());
  auto grad_k = empty_in_layout_of(k, q.scalar_type());
  auto grad_v = empty_in_layout_of(v, q.scalar_type());
  auto grad_logits = torch::empty_like(weights);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "swda_backward", [&] {
    with_sizes(g, [&](auto head_dim, auto kernel_size) {
      const Gradients<scalar_t> grads{grad_q.data_ptr<scalar_t>(), plane_of(grad_q),
                                      grad_k.data_ptr<scalar_t>(), plane_of(grad_k),
                                      grad_v.data_ptr<scalar_t>(), plane_of(grad_v)};
      backward_rows<scalar_t, decltype(head_dim)::value, decltype(kernel_size)::value>(
          inputs_of<scalar_t>(q, k, v), weights.data_ptr<scalar_t>(),
          grad_out.data_ptr<scalar_t>(), plane_of(grad_out), grads,
          grad_logits.data_ptr<scalar_t>(), g, dilations, static_cast<scalar_t>(scale));
    });
  });
  return {grad_q, grad_k, grad_v};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &swda_forward, "SWDA forward, one dilation per head: (out, weights (B, heads, H, k*k, W rounded up to a multiple of 8))");
  m.def("backward", &swda_backward, "SWDA backward: (grad_q, grad_k, grad_v)");
}
