// The depthwise kernels for NCHW (PyTorch's default layout) activations, read and written in place
// (no conversion to channels-last): vectorised along W. A sibling of depthwise_kernels.h, compiled
// per instruction set from depthwise_nchw_kernels_impl.h by the same isa_*.cpp files.
#pragma once

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "common/acc_type.h"
#include "common/geometry.h"

namespace xsep::cpu {

// Weights are channel-major, already converted to acc_t: w[oc * kh * kw + i * kw + j] (the
// [C*M, 1, kh, kw] weight's own order). A plane is one (n, channel) image, H x W (input) or Ho x Wo
// (output), rows contiguous.
template <typename T>
struct DepthwiseNchwKernels {
  using acc_t = Acc<T>;

  // Output rows [ho0, ho1) of image n, output channels of input channels [c0, c1):
  // out[(oc - c0 * M) * out_plane + (ho - ho0) * Wo + wo] = bias[oc] + sum_taps act_in(x) * w.
  // The depthwise op writes its output planes (out_plane = Ho * Wo); the fused op a tile buffer.
  // stream_out: write float outputs of the flat paths (strides up to 4) with non-temporal stores,
  // the partial vectors at a contiguous run's ends with plain ones (stream_output, host.h); the call
  // returns with them complete (sfence).
  void (*forward)(const DepthwiseGeometry&, const T* x, const acc_t* w, const acc_t* bias, T* out, int64_t out_plane,
                  int64_t n, int64_t c0, int64_t c1, int64_t ho0, int64_t ho1, bool stream_out);
  void (*forward_acc)(const DepthwiseGeometry&, const T* x, const acc_t* w, const acc_t* bias, acc_t* out,
                      int64_t out_plane, int64_t n, int64_t c0, int64_t c1, int64_t ho0, int64_t ho1);

  // Input-gradient planes q in [q0, q1) (q = n * C + c, overwritten) from grad_output go [N, C*M, Ho, Wo]
  // of type T or acc_t; x is read only when relu_input (gradient zeroed where x <= 0). stream_out as
  // in forward (the unit-stride path, M == 1).
  void (*grad_input)(const DepthwiseGeometry&, const T* go, const acc_t* w, const T* x, T* gi, int64_t q0, int64_t q1,
                     bool stream_out);
  void (*grad_input_acc)(const DepthwiseGeometry&, const acc_t* go, const acc_t* w, const T* x, T* gi, int64_t q0,
                         int64_t q1, bool stream_out);

  // gw[oc * kh * kw + tap] = sum over the batch of go * act_in(x), for the output channels of input
  // channels [c0, c1) (overwritten). Each value is summed by one call in an order fixed by the
  // shape (images in order), so the result does not depend on how the host splits the channels.
  void (*grad_weight)(const DepthwiseGeometry&, const T* go, const T* x, acc_t* gw, int64_t c0, int64_t c1);
  void (*grad_weight_acc)(const DepthwiseGeometry&, const acc_t* go, const T* x, acc_t* gw, int64_t c0, int64_t c1);

  // Small planes in channel blocks (depthwise_conv2d.cpp: the NCHW block paths): image n, input
  // channels [c0, c1), through an NHWC copy in a per-thread buffer and the NHWC kernels
  // (depthwise_kernels.h), with the layer's tap-major weights w_taps [kh * kw, C * M].
  // forward_blocked writes the block's output planes (plane oc - c0 * M at out + (oc - c0 * M) *
  // out_plane; the depthwise op: its output's planes, the fused op: a tile buffer).
  // backward_blocked writes its input-gradient planes into gi (when not null; x is then read only
  // when relu_input) and this image's weight gradient into the block's columns of gw_taps
  // (tap-major, when not null).
  void (*forward_blocked)(const DepthwiseGeometry&, const T* x, const acc_t* w_taps, const acc_t* bias, T* out,
                          int64_t out_plane, int64_t n, int64_t c0, int64_t c1);
  void (*forward_blocked_acc)(const DepthwiseGeometry&, const T* x, const acc_t* w_taps, const acc_t* bias, acc_t* out,
                              int64_t out_plane, int64_t n, int64_t c0, int64_t c1);
  void (*backward_blocked)(const DepthwiseGeometry&, const T* go, const T* x, const acc_t* w_taps, T* gi,
                           acc_t* gw_taps, int64_t n, int64_t c0, int64_t c1);
  // Float32 planes at unit stride and dilation whose output is the input's size (3 x 3, padded 1 on
  // each side; depth multiplier 1), whole planes: image n, channels [c0, c1),
  // plane c - c0 at out + (c - c0) * out_plane (the depthwise op: its output's planes, the fused op:
  // a tile buffer); the channel-major weights w. Read in place, no padded copy: each tap row's
  // shifted vectors come from the plane's own rows (masked loads, then lane shifts), the lanes
  // whose taps fall outside the plane masked out (nchw_shifted, depthwise_conv2d.cpp, says where it
  // runs). AVX-512 only (its masked loads and per-lane masked multiply-adds): nullptr in the other
  // tables and types.
  void (*forward_shifted)(const DepthwiseGeometry&, const T* x, const acc_t* w, const acc_t* bias, acc_t* out,
                          int64_t out_plane, int64_t n, int64_t c0, int64_t c1) = nullptr;
};

// The table for the instruction set depthwise_kernels<T>() uses (the same choice, XSEP_CPU_ISA included).
template <typename T> const DepthwiseNchwKernels<T>& depthwise_nchw_kernels();

}  // namespace xsep::cpu
