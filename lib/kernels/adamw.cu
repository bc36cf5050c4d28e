// Fused AdamW update of one tensor: fp32 master weights and moments, a gradient in the
// parameter's own dtype, and the parameter rewritten in its dtype, in one pass.
//
// What: g = grad * grad_scale (fp32); master *= 1 - lr*wd; m = lerp(m, g, 1 - b1);
// v = b2*v + (1 - b2)*g*g; master -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps); param = master
// rounded to its dtype. This is torch.optim.AdamW's formula, computed as Optimizer's per-tensor
// ATen path (adamw_update_reference in lib/ops/adamw_update.cc) computes it on the CPU: the same
// operations in the same order, each rounded to fp32, with lerp in torch's two-sided form. (torch's
// own CUDA kernels differ in the last bits: they divide by a scalar through its reciprocal and
// contract into FMAs.)
// Why: full fine-tuning of a bf16 model otherwise converts every bf16 gradient to a fp32 copy,
// scales it by the clip coefficient in a second pass, runs the AdamW update, and copies each
// master back into its bf16 parameter in a fourth; on the 1B model that was copy_ 6.3 ms + mul
// 3.2 ms + fused AdamW 10 ms per step. Here each element is read once (master, m, v: 4 bytes each;
// grad: 2 or 4) and written once (master, m, v, and the 2-byte parameter).
// Invariants: purely elementwise, one thread per element (or per group of 4), so the result is
// deterministic. The 4-wide path (16-byte fp32 loads, 8- or 16-byte grad/param loads) is taken
// only when n is a multiple of 4 and every pointer is aligned to its group's size; anything else
// (odd sizes, views offset into a buffer) takes the scalar path, which calls the same device
// function, so the two agree bit for bit.
// NaN policy: none. A NaN or inf in the gradient makes that element's master (and moments, and
// parameter) NaN, as in torch. The Trainer checks the gradient norm and skips non-finite steps
// before it calls the optimizer, so no check is spent here.
// Parity test: tests/cuda/optimizer_cuda_test.cc, against adamw_update_reference in fp64.
#include "kernels/adamw.cuh"
#include "kernels/float_convert.cuh"

#include <cmath>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace temper {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; larger tensors loop (grid stride).
constexpr int64_t kMaxBlocks = int64_t{1} << 16;
constexpr int kGroup = 4;

// The fp32 constants of one update, each rounded once from the host's double.
struct AdamwConstants {
  float decay;          // 1 - lr*wd
  float lerp_weight;    // 1 - beta1
  float beta2;
  float one_minus_beta2;
  float bias_correction2_sqrt;
  float eps;
  float step_size;      // lr / bc1
  float grad_scale;
};

// One element; the scalar and grouped kernels share it.
// Every operation is an explicitly rounded intrinsic: left as plain expressions, nvcc contracts
// multiply-adds into FMAs differently in the scalar and the 4-wide kernel (a [cuda] test caught the
// two paths disagreeing in the last bit), and the reference rounds each operation anyway.
__device__ __forceinline__ void adamw_element(float& p, float& m, float& v, float grad, const AdamwConstants& c) {
  const float g = __fmul_rn(grad, c.grad_scale);
  p = __fmul_rn(p, c.decay);
  // torch's lerp: from the nearer end, so that weight 0 and 1 give exactly m and g.
  const float diff = __fsub_rn(g, m);
  m = c.lerp_weight < 0.5f ? __fadd_rn(m, __fmul_rn(c.lerp_weight, diff))
                           : __fsub_rn(g, __fmul_rn(diff, __fsub_rn(1.0f, c.lerp_weight)));
  v = __fadd_rn(__fmul_rn(v, c.beta2), __fmul_rn(__fmul_rn(c.one_minus_beta2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bias_correction2_sqrt), c.eps);
  p = __fsub_rn(p, __fmul_rn(c.step_size, __fdiv_rn(m, denom)));
}

// kGroup elements of T in one aligned load/store (16 bytes for fp32, 8 for bf16/fp16).
template <typename T>
struct alignas(kGroup * sizeof(T)) Group {
  T v[kGroup];
};

// Elements [0, n) one at a time.
template <typename G, typename P>
__global__ void adamw_update_kernel(float* __restrict__ master, float* __restrict__ exp_avg,
                                    float* __restrict__ exp_avg_sq, const G* __restrict__ grad, P* __restrict__ param,
                                    int64_t n, AdamwConstants c) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    float p = master[i], m = exp_avg[i], v = exp_avg_sq[i];
    adamw_element(p, m, v, to_float(grad[i]), c);
    master[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    if (param != nullptr) param[i] = from_float<P>(p);
  }
}

// `groups` groups of kGroup elements; every pointer is aligned to its Group.
template <typename G, typename P>
__global__ void adamw_update_grouped_kernel(Group<float>* __restrict__ master, Group<float>* __restrict__ exp_avg,
                                            Group<float>* __restrict__ exp_avg_sq, const Group<G>* __restrict__ grad,
                                            Group<P>* __restrict__ param, int64_t groups, AdamwConstants c) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < groups; i += step) {
    Group<float> p = master[i], m = exp_avg[i], v = exp_avg_sq[i];
    const Group<G> g = grad[i];
    Group<P> out;
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      adamw_element(p.v[k], m.v[k], v.v[k], to_float(g.v[k]), c);
      out.v[k] = from_float<P>(p.v[k]);
    }
    master[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    if (param != nullptr) param[i] = out;
  }
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

unsigned grid_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

AdamwConstants constants_for(const AdamwScalars& s) {
  AdamwConstants c;
  c.decay = static_cast<float>(1.0 - s.lr * s.weight_decay);
  c.lerp_weight = static_cast<float>(1.0 - s.beta1);
  c.beta2 = static_cast<float>(s.beta2);
  c.one_minus_beta2 = static_cast<float>(1.0 - s.beta2);
  c.bias_correction2_sqrt = static_cast<float>(std::sqrt(s.bias_correction2));
  c.eps = static_cast<float>(s.eps);
  c.step_size = static_cast<float>(s.lr / s.bias_correction1);
  c.grad_scale = static_cast<float>(s.grad_scale);
  return c;
}

}  // namespace

template <typename G, typename P>
cudaError_t launch_adamw_update(float* master, float* exp_avg, float* exp_avg_sq, const G* grad, P* param, int64_t n,
                                const AdamwScalars& scalars, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const AdamwConstants c = constants_for(scalars);
  const size_t fp32_group = sizeof(Group<float>);
  if (n % kGroup == 0 && aligned(master, fp32_group) && aligned(exp_avg, fp32_group) &&
      aligned(exp_avg_sq, fp32_group) && aligned(grad, sizeof(Group<G>)) &&
      (param == nullptr || aligned(param, sizeof(Group<P>)))) {
    const int64_t groups = n / kGroup;
    adamw_update_grouped_kernel<G, P><<<grid_for(groups), kThreads, 0, stream>>>(
        reinterpret_cast<Group<float>*>(master), reinterpret_cast<Group<float>*>(exp_avg),
        reinterpret_cast<Group<float>*>(exp_avg_sq), reinterpret_cast<const Group<G>*>(grad),
        reinterpret_cast<Group<P>*>(param), groups, c);
  } else {
    adamw_update_kernel<G, P><<<grid_for(n), kThreads, 0, stream>>>(master, exp_avg, exp_avg_sq, grad, param, n, c);
  }
  return cudaGetLastError();
}

#define TEMPER_INSTANTIATE_ADAMW(G, P)                                                                     \
  template cudaError_t launch_adamw_update<G, P>(float*, float*, float*, const G*, P*, int64_t,           \
                                                 const AdamwScalars&, cudaStream_t);
#define TEMPER_INSTANTIATE_ADAMW_FOR_GRAD(G) \
  TEMPER_INSTANTIATE_ADAMW(G, float)         \
  TEMPER_INSTANTIATE_ADAMW(G, __nv_bfloat16) \
  TEMPER_INSTANTIATE_ADAMW(G, __half)

TEMPER_INSTANTIATE_ADAMW_FOR_GRAD(float)
TEMPER_INSTANTIATE_ADAMW_FOR_GRAD(__nv_bfloat16)
TEMPER_INSTANTIATE_ADAMW_FOR_GRAD(__half)

}  // namespace temper
