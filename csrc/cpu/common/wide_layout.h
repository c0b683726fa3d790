// "Wide" activation layouts shared by the CPU kernels of every sparsity kind,
// compiled once for the baseline target (the per-ISA kernels call them): the
// input (or grad_out) copied so that every tap of the kernel is a constant
// offset from an output pixel, and a sparse conv becomes sweeps of
// contiguous pixel vectors over shifted windows of one buffer:
//
// - "wide" pixels: a group of images is laid out as one plane per channel,
//   images stacked vertically, rows `ww` wide and `rh` rows per image. Pixel
//   q = (b * rh + h) * ww + w; only h < vh and w < vw are real (the others are
//   computed and dropped, or zero where they are read).
// - InputSource (forward, grad-weight), input channel c of tap k at
//   base + c * cs + off[k] + q:
//     stride 1: the zero-padded input with rows and images sharing their
//               padding (ww = max(in_w + pad_w, out_w), rh likewise: a read
//               past a row's end lands in the next row's left padding);
//               off[k] = kh*dil_h*ww + kw*dil_w (the "flat" case);
//     otherwise: polyphase, sh*sw phase planes per channel (those no tap
//               reads left unbuilt; phase (a, b) at
//               (a * sw + b) * ps holds xpad[i * sh + a, j * sw + b]), ww =
//               out_w + (Kw-1)*dil_w / sw, rh likewise; tap (kh, kw) reads
//               phase (kh*dil_h % sh, kw*dil_w % sw) at row offset
//               kh*dil_h / sh, column offset kw*dil_w / sw: the stride-1 GEMM
//               of the flat case, the input copied once rather than per tap.
// - GradSource (grad-input), output channel o at base + o * cs: grad_out
//   shifted by the kernel reach, so that on a phase plane of dX (all of dX
//   when grad_out is dilated by the stride; one of stride_h * stride_w planes
//   when it is not: polyphase)
//   dx[c, q] = sum over the phase's taps k and stripes s at k of
//              w[s, c] * G[o_s, q + off[k]]
//   with ww, rh as small as keeps every read of a real pixel on its own
//   row's values or on zeros.
//
// Builders contain `omp for` (orphaned): every thread of the enclosing
// parallel region calls them; they end with its barrier.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include <sys/mman.h>

#include "cpu/common/conv_layout.h"

namespace sparsekernels {
namespace cpu {
namespace detail {
namespace wide {

// Scratch memory the calling thread keeps between calls, one block per slot:
// the layouts below are tens of MB, and fresh allocations of that size cost
// more in page faults than the copy into them. Blocks are 2 MiB aligned and
// advised as transparent huge pages; a block grows to the largest request of
// its slot and is freed when the thread exits. Contents are not preserved.
enum ScratchSlot { kSourceSlot, kGradOutSlot, kWeightSlot, kOffsetSlot, kTileSlot, kSlots };

inline void* scratch(ScratchSlot slot, size_t bytes) {
  struct Block {
    void* p = nullptr;
    size_t cap = 0;
    ~Block() { std::free(p); }
  };
  thread_local Block blocks[kSlots];
  Block& b = blocks[slot];
  if (bytes > b.cap) {
    constexpr size_t kHuge = size_t(2) << 20;
    const size_t cap = (std::max<size_t>(bytes, 1) + kHuge - 1) / kHuge * kHuge;
    void* p = std::aligned_alloc(kHuge, cap);
    if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    madvise(p, cap, MADV_HUGEPAGE);
#endif
    std::free(b.p);
    b.p = p, b.cap = cap;
  }
  return b.p;
}

// Row copies and fills of a few dozen elements, the bulk of the layout
// builders: fixed-size blocks the compiler inlines, rather than a memmove /
// memset call per row.
template <typename T>
inline void copy_row(const T* src, int64_t n, T* dst) {
  if (n > 512) {
    std::memcpy(dst, src, sizeof(T) * size_t(n));
    return;
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) __builtin_memcpy(dst + i, src + i, 8 * sizeof(T));
  if (n - i >= 4) __builtin_memcpy(dst + i, src + i, 4 * sizeof(T)), i += 4;
  if (n - i >= 2) __builtin_memcpy(dst + i, src + i, 2 * sizeof(T)), i += 2;
  if (n - i >= 1) dst[i] = src[i];
}
template <typename T>
inline void zero_row(T* dst, int64_t n) {
  if (n > 512) {
    std::memset(dst, 0, sizeof(T) * size_t(n));
    return;
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) __builtin_memset(dst + i, 0, 8 * sizeof(T));
  if (n - i >= 4) __builtin_memset(dst + i, 0, 4 * sizeof(T)), i += 4;
  if (n - i >= 2) __builtin_memset(dst + i, 0, 2 * sizeof(T)), i += 2;
  if (n - i >= 1) dst[i] = T(0);
}

template <typename T>
T* scratch_array(ScratchSlot slot, int64_t n) {
  return static_cast<T*>(scratch(slot, sizeof(T) * size_t(std::max<int64_t>(n, 1))));
}

// Elements of a channel plane of at least n elements whose byte size is an
// odd number of cache lines: the rows of consecutive channels, read together
// by a tile, then fall into different cache sets.
inline int64_t odd_lines(int64_t n, int64_t elem) {
  int64_t lines = (n * elem + 63) / 64;
  if (lines % 2 == 0) ++lines;
  return lines * 64 / elem;
}

struct Wide {
  int64_t ww = 1, rh = 1;  // row width, rows per image
  int64_t vh = 0, vw = 0;  // real rows / columns per image
  int64_t nb = 0;          // images
  int64_t npix = 0;        // wide pixels computed: a multiple of the tile width

  void set(int64_t images, int64_t tile) {
    nb = images;
    npix = images == 0 ? 0 : round_up(((images - 1) * rh + vh) * ww, tile);
  }
  Wide with_images(int64_t images, int64_t tile) const {
    Wide w = *this;
    w.set(images, tile);
    return w;
  }

  // Whether wide pixels [q, q + n) are all real and consecutive in the
  // output: inside one row's real columns, or inside one image when no pixel
  // of the layout is padding.
  bool whole_vector(int64_t q, int64_t n) const {
    const int64_t row = q / ww, col = q - row * ww, b = row / rh, h = row - b * rh;
    if (b >= nb || h >= vh) return false;
    if (ww == vw && rh == vh) return q + n <= (b + 1) * rh * ww;
    return col + n <= vw;
  }
  // Output offset of real wide pixel q (images img_stride apart).
  int64_t out_offset(int64_t q, int64_t img_stride) const {
    const int64_t row = q / ww, col = q - row * ww, b = row / rh, h = row - b * rh;
    return b * img_stride + h * vw + col;
  }

  // The real pixels among buf[0 .. n) (wide pixels q0 .. q0 + n) into an NCHW
  // plane: image b's plane at out + b * img_stride, rows vw wide.
  template <typename T>
  void store(const T* buf, int64_t q0, int64_t n, T* out, int64_t img_stride) const {
    if (n <= 0) return;
    const int64_t r0 = q0 / ww, r1 = (q0 + n - 1) / ww;
    for (int64_t r = r0; r <= r1; ++r) {
      const int64_t b = r / rh, h = r % rh;
      if (b >= nb || h >= vh) continue;
      const int64_t lo = std::max(q0, r * ww), hi = std::min(q0 + n, r * ww + vw);
      if (hi > lo) copy_row(buf + (lo - q0), hi - lo, out + b * img_stride + h * vw + (lo - r * ww));
    }
  }
};

// The input of a group of images as the forward and grad-weight GEMMs read it.
template <typename T>
struct InputSource {
  InputSource(const ConvGeometry& geo, int64_t tile) : geo_(geo), tile_(tile) {
    flat = geo.stride_h == 1 && geo.stride_w == 1;
    const int64_t taps = geo.taps();
    if (flat) {
      // Consecutive rows (and images) share their padding: the right pad of a
      // row is the left pad of the next, read through the flat index; the
      // wide outputs must still fit a row and an image.
      wide.ww = std::max<int64_t>(geo.in_w + geo.pad_w, geo.out_w);
      wide.rh = std::max<int64_t>(geo.in_h + geo.pad_h, geo.out_h);
      for (int kh = 0; kh < geo.kh; ++kh)
        for (int kw = 0; kw < geo.kw; ++kw)
          off.push_back(int64_t(kh) * geo.dil_h * wide.ww + int64_t(kw) * geo.dil_w);
      span = off.back();
      for (int kh = 0; kh < geo.kh; ++kh) row_first.push_back(off[int64_t(kh) * geo.kw]);
      per_image = geo.cin * wide.rh * wide.ww;
    } else {
      // Polyphase: the padded input splits into sh * sw phase planes,
      // P[a, b][i, j] = xpad[i * sh + a, j * sw + b]; tap (kh, kw) reads phase
      // (kh*dil_h % sh, kw*dil_w % sw) shifted by (kh*dil_h / sh, kw*dil_w / sw)
      // as a stride-1 tap would. Phase planes do not share padding.
      const int64_t sh = geo.stride_h, sw = geo.stride_w;
      const int64_t mh = int64_t(geo.kh - 1) * geo.dil_h / sh;
      const int64_t mw = int64_t(geo.kw - 1) * geo.dil_w / sw;
      wide.ww = geo.out_w + mw;
      wide.rh = geo.out_h + mh;
      phases = sh * sw;
      span = mh * wide.ww + mw;
      per_image = geo.cin * phases * wide.rh * wide.ww;
    }
    wide.vh = geo.out_h;
    wide.vw = geo.out_w;
    group = images_per_group(per_image * int64_t(sizeof(T)), std::max<int64_t>(geo.batch, 1));
    wide.set(group, tile);
    if (flat) {
      cs = odd_lines(std::max(group * wide.rh * wide.ww, wide.npix + span) + tile, sizeof(T));
    } else {
      // Every element a tap reads lies inside its channel's phase planes.
      ps = round_up(std::max(group * wide.rh * wide.ww, wide.npix + span) + tile, 16);
      cs = odd_lines(phases * ps, sizeof(T));
      phase_read.resize(phases, 0);
      for (int kh = 0; kh < geo.kh; ++kh)
        for (int kw = 0; kw < geo.kw; ++kw) {
          const int64_t a = int64_t(kh) * geo.dil_h, b = int64_t(kw) * geo.dil_w;
          const int64_t phase = (a % geo.stride_h) * geo.stride_w + b % geo.stride_w;
          off.push_back(phase * ps + a / geo.stride_h * wide.ww + b / geo.stride_w);
          const int64_t row = phase * ps + a / geo.stride_h * wide.ww;
          if (std::none_of(row_first.begin(), row_first.end(), [&](int64_t f) {
                return f >= row && f < row + wide.ww;
              }))
            row_first.push_back(off.back());
          phase_read[phase] = 1;
        }
      // Columns [col_lo, col_hi) of column phase bb hold input columns.
      const int64_t sw = geo.stride_w, pw = geo.pad_w, ww = wide.ww;
      for (int64_t bb = 0; bb < sw; ++bb) {
        col_lo.push_back(std::min(ww, std::max<int64_t>(0, (pw - bb + sw - 1) / sw)));
        col_hi.push_back(
            std::max(col_lo.back(), std::min(ww, (geo.in_w + pw - bb + sw - 1) / sw)));
      }
    }
    buf = scratch_array<T>(kSourceSlot, geo.cin * cs);
    (void)taps;
  }

  // Group channel c of group g at tap k, wide pixel 0.
  const T* at(int64_t g, int64_t k) const {
    return buf + g * geo_.cin_per_group() * cs + off[k];
  }

  // Lays out images [b0, b0 + nb) (orphaned omp for over input channels).
  // The wide layout of a build of nb images.
  Wide layout(int64_t nb) const { return wide.with_images(nb, tile_); }

  // `read`, when given, flags the input channels some kept weight reads: the
  // others are left as they are (a sparse weight at high sparsity reads a
  // fraction of them).
  void build(const T* x, Strides4 s, int64_t b0, int64_t nb,
             const std::vector<char>* read = nullptr) {
    const ConvGeometry& geo = geo_;
    const int64_t ww = wide.ww, ph = geo.pad_h, pw = geo.pad_w;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < geo.cin; ++c) {
      if (read && !(*read)[c]) continue;
      if (flat) {
        // Per image: pad_h zero rows, in_h rows of [pad_w zeros, in_w values,
        // zeros to ww], zero rows to rh; then zeros to the plane's end.
        T* p = buf + c * cs;
        for (int64_t b = 0; b < nb; ++b) {
          const T* xc = x + (b0 + b) * s.n + c * s.c;
          std::fill(p, p + ph * ww, T(0));
          p += ph * ww;
          for (int64_t h = 0; h < geo.in_h; ++h, p += ww) {
            const T* xr = xc + h * s.h;
            zero_row(p, pw);
            if (s.w == 1) {
              copy_row(xr, geo.in_w, p + pw);
            } else {
              for (int64_t w = 0; w < geo.in_w; ++w) p[pw + w] = xr[w * s.w];
            }
            zero_row(p + pw + geo.in_w, ww - pw - geo.in_w);
          }
          const int64_t rest = (wide.rh - ph - geo.in_h) * ww;
          std::fill(p, p + rest, T(0));
          p += rest;
        }
        std::fill(p, buf + (c + 1) * cs, T(0));
      } else {
        // Each input row once, in order, split over the column phases; the
        // phase rows no input row maps to are zero.
        const int64_t sh = geo.stride_h, sw = geo.stride_w, rh = wide.rh;
        T* const pc = buf + c * cs;
        const int64_t* jlo = col_lo.data();
        const int64_t* jhi = col_hi.data();
        for (int64_t b = 0; b < nb; ++b) {
          const T* xc = x + (b0 + b) * s.n + c * s.c;
          for (int64_t a = 0; a < sh; ++a)
            for (int64_t i = 0; i < rh; ++i) {
              const int64_t h = i * sh + a - ph;
              if (h >= 0 && h < geo.in_h) continue;
              for (int64_t bb = 0; bb < sw; ++bb) {
                if (!phase_read[a * sw + bb]) continue;
                T* p = pc + (a * sw + bb) * ps + (b * rh + i) * ww;
                zero_row(p, ww);
              }
            }
          const int64_t h_end = std::min<int64_t>(geo.in_h, rh * sh - ph);
          for (int64_t h = std::max<int64_t>(0, -ph); h < h_end; ++h) {
            const int64_t a = (h + ph) % sh, i = (h + ph) / sh;
            const T* xr = xc + h * s.h;
            for (int64_t bb = 0; bb < sw; ++bb) {
              if (!phase_read[a * sw + bb]) continue;
              T* p = pc + (a * sw + bb) * ps + (b * rh + i) * ww;
              zero_row(p, jlo[bb]);
              const T* xs = xr + (jlo[bb] * sw + bb - pw) * s.w;
              const int64_t n = jhi[bb] - jlo[bb], step = sw * s.w;
              T* d = p + jlo[bb];
              if (step == 2) {
                for (int64_t j = 0; j < n; ++j) d[j] = xs[2 * j];
              } else {
                for (int64_t j = 0; j < n; ++j) d[j] = xs[j * step];
              }
              zero_row(p + jhi[bb], ww - jhi[bb]);
            }
          }
        }
        for (int64_t ph_i = 0; ph_i < sh * sw; ++ph_i)
          if (phase_read[ph_i])
            std::fill(pc + ph_i * ps + nb * rh * ww, pc + (ph_i + 1) * ps, T(0));
        std::fill(buf + c * cs + sh * sw * ps, buf + (c + 1) * cs, T(0));
      }
    }
  }

  bool flat;
  Wide wide;
  int64_t span;       // largest tap offset (flat), else 0
  int64_t per_image;  // elements one image takes
  int64_t group;      // images per build
  int64_t cs;         // channel stride
  int64_t phases = 1; // planes per channel (polyphase: stride_h * stride_w)
  // Polyphase: whether some tap reads phase plane (a, b) (a 1x1 stride-2 conv
  // reads one of four); the others are never built.
  std::vector<char> phase_read;
  int64_t ps = 0;     // phase plane stride (polyphase)
  std::vector<int64_t> off;
  // Per row of the window some tap reads (each phase plane's rows apart),
  // its first tap's offset: where a channel's reads start, for prefetches.
  std::vector<int64_t> row_first;
  std::vector<int64_t> col_lo, col_hi;  // polyphase: real columns per column phase
  T* buf;

 private:
  const ConvGeometry& geo_;
  int64_t tile_;
};

// grad_out of a group of images in the wide layout of an InputSource, zero at
// pixels that are not real (grad-weight reads every wide pixel).
template <typename T>
struct WideGradOut {
  WideGradOut(const ConvGeometry& geo, const Wide& wide, int64_t group) : geo_(geo) {
    cs = odd_lines(std::max<int64_t>(wide.npix, 1), sizeof(T));
    buf = scratch_array<T>(kGradOutSlot, geo.cout * cs);
    (void)group;
  }

  void build(const T* go, Strides4 s, int64_t b0, const Wide& wide) {
    const ConvGeometry& geo = geo_;
#pragma omp for schedule(static)
    for (int64_t o = 0; o < geo.cout; ++o) {
      T* p = buf + o * cs;
      std::fill(p, p + cs, T(0));
      for (int64_t b = 0; b < wide.nb; ++b)
        for (int64_t h = 0; h < geo.out_h; ++h) {
          const T* src = go + (b0 + b) * s.n + o * s.c + h * s.h;
          T* d = p + (b * wide.rh + h) * wide.ww;
          if (s.w == 1) {
            copy_row(src, geo.out_w, d);
          } else {
            for (int64_t w = 0; w < geo.out_w; ++w) d[w] = src[w * s.w];
          }
        }
    }
  }

  int64_t cs;
  T* buf;

 private:
  const ConvGeometry& geo_;
};

// grad_out of a group of images zero-padded, as the grad-input GEMM reads it
// (see the top of this file). The transposed conv is computed on phase planes
// of dX: phase (a, b) holds the input pixels whose padded coordinates are
// (i * ph + a, j * pw + b), and takes only the taps (kh, kw) with
// kh*dil_h % ph == a and kw*dil_w % pw == b, each at a constant offset.
// - polyphase (ph, pw = the stride): grad_out is stored undilated, and no
//   tap multiplies the zeros a dilated grad_out would hold (a 1x1 stride-2
//   conv has one phase of four with a tap; the others are zero);
// - otherwise (ph = pw = 1): one phase of every tap over grad_out dilated by
//   the stride.
// Tap t of phase p reads o's wide pixel q + off[t] for dX pixel q of p, in
// a layout (ww, rh) as tight as keeps every read of a real pixel on its own
// row's values or on zeros: a row's data may run into the next row's first
// columns (and an image's into the next image's first rows), which that row
// never reads.
template <typename T>
struct GradSource {
  struct Phase {
    std::vector<int> taps;     // taps (kh * Kw + kw) this phase takes
    int64_t y0 = 0, x0 = 0;    // dX pixel of the phase's pixel (0, 0)
    int64_t vh = 0, vw = 0;    // real rows / columns
  };

  GradSource(const ConvGeometry& geo, int64_t tile, bool polyphase = false)
      : geo_(geo), tile_(tile) {
    ph = polyphase ? geo.stride_h : 1;
    pw = polyphase ? geo.stride_w : 1;
    eh = geo.stride_h / ph;  // grad_out's spacing: the stride's part no phase takes
    ew = geo.stride_w / pw;
    mh = int64_t(geo.kh - 1) * geo.dil_h / ph;  // the taps' reach in phase pixels
    mw = int64_t(geo.kw - 1) * geo.dil_w / pw;
    // Per row (column) phase: first phase pixel that is real, count, dX pixel.
    auto axis = [](int64_t period, int64_t pad, int64_t in, std::vector<int64_t>& first,
                   std::vector<int64_t>& count, std::vector<int64_t>& origin) {
      for (int64_t a = 0; a < period; ++a) {
        const int64_t i0 = a >= pad ? 0 : (pad - a + period - 1) / period;
        const int64_t end = pad + in > a ? (pad + in - a + period - 1) / period : 0;
        first.push_back(i0);
        count.push_back(std::max<int64_t>(0, end - i0));
        origin.push_back(i0 * period + a - pad);
      }
    };
    std::vector<int64_t> i0, nh, y0, j0, nw, x0;
    axis(ph, geo.pad_h, geo.in_h, i0, nh, y0);
    axis(pw, geo.pad_w, geo.in_w, j0, nw, x0);
    // Rows (columns) of grad_out data per image (row), top (left) zeros included.
    dh = mh + (geo.out_h - 1) * eh + 1;
    dw = mw + (geo.out_w - 1) * ew + 1;
    int64_t rows = mh + 1, cols = mw + 1, min_i0 = mh, min_j0 = mw;
    for (int64_t a = 0; a < ph; ++a)
      if (nh[a] > 0) rows = std::max(rows, i0[a] + nh[a]), min_i0 = std::min(min_i0, i0[a]);
    for (int64_t b = 0; b < pw; ++b)
      if (nw[b] > 0) cols = std::max(cols, j0[b] + nw[b]), min_j0 = std::min(min_j0, j0[b]);
    wide.rh = std::max(rows, dh - min_i0);
    wide.ww = std::max(cols, dw - min_j0);
    off.assign(geo.taps(), 0);
    phases.resize(ph * pw);
    for (int64_t a = 0; a < ph; ++a)
      for (int64_t b = 0; b < pw; ++b) {
        Phase& p = phases[a * pw + b];
        p.y0 = y0[a], p.x0 = x0[b], p.vh = nh[a], p.vw = nw[b];
        wide.vh = std::max(wide.vh, p.vh);
        wide.vw = std::max(wide.vw, p.vw);
      }
    span = 0;
    for (int kh = 0; kh < geo.kh; ++kh)
      for (int kw = 0; kw < geo.kw; ++kw) {
        const int64_t rh_ = int64_t(kh) * geo.dil_h, rw_ = int64_t(kw) * geo.dil_w;
        const int64_t a = rh_ % ph, b = rw_ % pw;
        Phase& p = phases[a * pw + b];
        const int t = kh * geo.kw + kw;
        off[t] = (i0[a] + mh - rh_ / ph) * wide.ww + j0[b] + mw - rw_ / pw;
        if (p.vh == 0 || p.vw == 0) continue;
        p.taps.push_back(t);
        span = std::max(span, off[t]);
      }
    group = images_per_group(geo.cout * wide.rh * wide.ww * int64_t(sizeof(T)),
                             std::max<int64_t>(geo.batch, 1));
    wide.set(group, tile);
    const int64_t data_end = ((group - 1) * wide.rh + dh) * wide.ww + dw;
    cs = odd_lines(std::max(data_end, wide.npix + span) + tile, sizeof(T));
    buf = scratch_array<T>(kSourceSlot, geo.cout * cs);
  }

  Wide layout(int64_t nb) const { return wide.with_images(nb, tile_); }

  void build(const T* go, Strides4 s, int64_t b0, int64_t nb) {
    const ConvGeometry& geo = geo_;
    const int64_t ww = wide.ww, rh = wide.rh;
#pragma omp for schedule(static)
    for (int64_t o = 0; o < geo.cout; ++o) {
      T* p = buf + o * cs;
      // Rows lie in increasing order: zeros only between them (the whole
      // plane zeroed first wrote it twice), or every element where a
      // dilated row leaves gaps in itself.
      T* zeroed = p;
      if (ew != 1) std::fill(p, p + cs, T(0)), zeroed = p + cs;
      for (int64_t b = 0; b < nb; ++b)
        for (int64_t h = 0; h < geo.out_h; ++h) {
          const T* src = go + (b0 + b) * s.n + o * s.c + h * s.h;
          T* d = p + (b * rh + mh + h * eh) * ww + mw;  // may run into the next row
          if (d > zeroed) zero_row(zeroed, d - zeroed);
          if (ew == 1 && s.w == 1) {
            copy_row(src, geo.out_w, d);
          } else {
            for (int64_t w = 0; w < geo.out_w; ++w) d[w * ew] = src[w * s.w];
          }
          zeroed = std::max(zeroed, d + (geo.out_w - 1) * ew + 1);
        }
      if (p + cs > zeroed) zero_row(zeroed, p + cs - zeroed);
    }
  }

  // The real pixels among wide pixels q0 .. q0 + n of every phase into dX
  // (image b's plane at out + b * img_stride): phase p's at from[p][0 .. n),
  // zeros where from[p] is null. A dX row's phases are written together, so
  // its cache lines are written by one caller only.
  void store(const T* const* from, int64_t q0, int64_t n, const Wide& w, T* out,
             int64_t img_stride) const {
    if (n <= 0) return;
    const int64_t in_w = geo_.in_w;
    for (int64_t r = q0 / w.ww; r <= (q0 + n - 1) / w.ww; ++r) {
      const int64_t b = r / w.rh, h = r % w.rh;
      if (b >= w.nb) continue;
      const int64_t lo = std::max(q0, r * w.ww) - r * w.ww;
      const int64_t end = std::min(q0 + n, (r + 1) * w.ww) - r * w.ww;
      for (int64_t a = 0; a < ph; ++a) {
        if (h >= phases[a * pw].vh) continue;
        T* row = out + b * img_stride + (phases[a * pw].y0 + h * ph) * in_w;
        int64_t done = lo;  // columns stored in every column phase
        if (pw == 2) {
          // Stride 2: the even and odd columns interleaved in one pass, a
          // phase no tap reaches as zeros (a 1x1 stride-2 conv's dX is 3/4
          // such: element by element, its strided zero stores took ~1.6x
          // the time of the tiles at 90%).
          const int64_t ev = phases[a * 2].x0 == 0 ? 0 : 1;
          const T* e = from[a * 2 + ev];
          const T* o = from[a * 2 + 1 - ev];
          if (e) e += r * w.ww - q0;
          if (o) o += r * w.ww - q0;
          done = std::max(lo, std::min({end, phases[a * 2].vw, phases[a * 2 + 1].vw}));
          if (e && o) {
            for (int64_t k = lo; k < done; ++k) row[2 * k] = e[k], row[2 * k + 1] = o[k];
          } else if (e) {
            for (int64_t k = lo; k < done; ++k) row[2 * k] = e[k], row[2 * k + 1] = T(0);
          } else if (o) {
            for (int64_t k = lo; k < done; ++k) row[2 * k] = T(0), row[2 * k + 1] = o[k];
          } else {
            std::fill(row + 2 * lo, row + 2 * done, T(0));
          }
        }
        for (int64_t bb = 0; bb < pw; ++bb) {
          const Phase& p = phases[a * pw + bb];
          const int64_t hi = std::min(end, p.vw);
          if (hi <= done) continue;
          T* d = row + p.x0 + done * pw;
          const T* f = from[a * pw + bb];
          if (f == nullptr && pw == 1) {
            std::fill(d, d + (hi - done), T(0));
          } else if (f == nullptr) {
            for (int64_t k = 0; k < hi - done; ++k) d[k * pw] = T(0);
          } else if (pw == 1) {
            copy_row(f + (r * w.ww + done - q0), hi - done, d);
          } else {
            f += r * w.ww + done - q0;
            for (int64_t k = 0; k < hi - done; ++k) d[k * pw] = f[k];
          }
        }
      }
    }
  }

  Wide wide;
  std::vector<Phase> phases;  // ph * pw, row phase major
  std::vector<int64_t> off;   // per tap, its offset in its phase
  int64_t ph, pw, eh, ew, mh, mw, dh, dw, span, group, cs;
  T* buf;

 private:
  const ConvGeometry& geo_;
  int64_t tile_;
};

// Pixels per work chunk: a multiple of `tile` such that `rows` channel rows of
// chunk + span pixels take about `budget` bytes, within [lo_tiles * tile, npix].
inline int64_t chunk_pixels(int64_t rows, int64_t span, int64_t elem, int64_t tile,
                            int64_t npix, int64_t budget = 192 << 10, int64_t lo_tiles = 4,
                            int64_t hi = 4096) {
  int64_t ch = budget / (elem * std::max<int64_t>(rows, 1)) - span;
  ch = std::min(ch, hi) / tile * tile;
  ch = std::max(ch, lo_tiles * tile);
  return std::max<int64_t>(tile, std::min(ch, round_up(std::max<int64_t>(npix, 1), tile)));
}

// Tile i of the nt = ceil(n / R) near-equal tiles of [lo, hi) (n = hi - lo),
// for register tiles of at most R rows: 7 rows become 4 + 3 rather than 6 + 1.
inline int64_t num_tiles(int64_t lo, int64_t hi, int R) { return (hi - lo + R - 1) / R; }
inline int64_t tile_start(int64_t lo, int64_t hi, int64_t nt, int64_t i) {
  return lo + (hi - lo) * i / nt;
}

// Splits of a dimension of `n` into blocks so that `base * blocks` work items
// keep `threads` busy (each block at least `min_block`).
inline int64_t num_blocks(int64_t n, int64_t base, int64_t threads, int64_t min_block) {
  int64_t nb = 1;
  while (threads > 1 && base * nb < 4 * threads && n / (nb * 2) >= min_block) nb *= 2;
  return nb;
}

// A thread's share of `costs.size()` work items done in order: contiguous
// ranges of near-equal total cost, range t = [first[t], first[t + 1]). A
// thread that knows its next item can fetch that item's input while it
// computes this one (Trickle); a dynamic schedule would not say which.
inline std::vector<int64_t> partition_by_cost(const std::vector<double>& costs, int threads) {
  double total = 0;
  for (const double c : costs) total += c;
  std::vector<int64_t> first(threads + 1, int64_t(costs.size()));
  first[0] = 0;
  double sum = 0;
  int t = 1;
  for (int64_t i = 0; i < int64_t(costs.size()) && t < threads; ++i) {
    // Item i goes to the thread whose share its middle falls in.
    while (t < threads && sum + costs[i] / 2 >= total * t / threads) first[t++] = i;
    sum += costs[i];
  }
  return first;
}

// Prefetches into L2, a line or a few per step between the blocks of a
// tile, what a thread will read next (its next work item's input; in the
// 1x1 grad-input, the next block row's grad_out): `run` bytes from
// base + ch[i] * cs for each channel i < nch. Items read their channels
// scattered, a short run each, which the hardware prefetchers do not follow;
// fetched on demand, the first block row over a pixel chunk waited on memory.
// The lines are fetched over the item's last steps, as late as the rate of
// at most 8 lines a step allows, so that as little of this item's own
// traffic as possible passes through L2 after them.
struct Trickle {
  const char* base = nullptr;
  const int32_t* ch = nullptr;
  int64_t nch = 0, cs = 0, run = 0;
  int64_t wait = 0;  // steps before the first line
  int rate = 0;      // lines per step
  int64_t c = 0, off = 0;

  // Fetches the region over the last of the `steps` calls of step() to come:
  // channels[0 .. n) (null: channels 0 .. n-1), cs_bytes apart, run_bytes of
  // each from b.
  void start(const char* b, const int32_t* channels, int64_t n, int64_t cs_bytes,
             int64_t run_bytes, int64_t steps) {
    base = b, ch = channels, nch = n, cs = cs_bytes, run = run_bytes, c = 0, off = 0;
    const int64_t lines = n * ((run_bytes + 63) / 64);
    steps = std::max<int64_t>(steps, 1);
    rate = n == 0 ? 0 : static_cast<int>(std::min<int64_t>(8, (lines + steps - 1) / steps));
    wait = rate == 0 ? 0 : std::max<int64_t>(0, steps - (lines + rate - 1) / rate);
  }
  void stop() { rate = 0; }
  bool active() const { return rate > 0; }
  inline void step() {
    if (wait > 0) {
      --wait;
      return;
    }
    for (int i = 0; i < rate; ++i) {
      __builtin_prefetch(base + (ch ? ch[c] : c) * cs + off, 0, 2);
      if ((off += 64) >= run) {
        off = 0;
        if (++c == nch) {
          rate = 0;
          return;
        }
      }
    }
  }
};

}  // namespace wide
}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
