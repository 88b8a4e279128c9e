// Fused bias + activation + gain + clamp, elementwise on CUDA.
//
// One kernel, three modes, all evaluated at z = xref + bias (bias broadcast along one dimension):
//   mode 0 (forward):  out = clamp(act(z) * gain)                                     (xref = a)
//   mode 1 (gradient): out = a * act'(z) * gain * inside(z)                           (a = dy)
//   mode 2 (2nd-order): out = a * aux * act''(z) * gain * inside(z)                   (a = d(dx), aux = dy)
// where inside(z) is 1 when |act(z) * gain| <= clamp (or clamping is off) and 0 otherwise, matching
// the gradient of torch.clamp. Mode 1 is linear in `a`, which is what makes double backward simple.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace {

// Activation ids shared with bias_act.py (ActSpec.kernel_id).
enum Act : int { kLinear = 1, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

template <typename T>
__device__ __forceinline__ T sigmoid_of(T z) {
    return T(1) / (T(1) + exp(-z));
}

// Value (order 0) or derivative (order 1, 2) of activation A at z.
template <int A, typename T>
__device__ __forceinline__ T act_eval(T z, T alpha, int order) {
    const T one = T(1);
    if (A == kLinear) {
        return order == 0 ? z : (order == 1 ? one : T(0));
    }
    if (A == kRelu) {
        if (order == 0) return z > T(0) ? z : T(0);
        return (order == 1 && z > T(0)) ? one : T(0);
    }
    if (A == kLrelu) {
        if (order == 0) return z > T(0) ? z : z * alpha;
        return order == 1 ? (z > T(0) ? one : alpha) : T(0);
    }
    if (A == kTanh) {
        T t = tanh(z);
        if (order == 0) return t;
        T d = one - t * t;
        return order == 1 ? d : T(-2) * t * d;
    }
    if (A == kSigmoid) {
        T s = sigmoid_of(z);
        if (order == 0) return s;
        T d = s * (one - s);
        return order == 1 ? d : d * (one - T(2) * s);
    }
    if (A == kElu) {  // alpha is fixed at 1, as torch.nn.functional.elu's default
        if (order == 0) return z > T(0) ? z : expm1(z);
        if (z > T(0)) return order == 1 ? one : T(0);
        return exp(z);
    }
    if (A == kSelu) {
        const T scale = T(1.0507009873554804934193349852946);
        const T scale_alpha = scale * T(1.6732632423543772848170429916717);
        if (order == 0) return z > T(0) ? scale * z : scale_alpha * expm1(z);
        if (z > T(0)) return order == 1 ? scale : T(0);
        return scale_alpha * exp(z);
    }
    if (A == kSoftplus) {  // beta = 1, threshold = 20, as torch.nn.functional.softplus
        if (order == 0) return z > T(20) ? z : log1p(exp(z));
        if (z > T(20)) return order == 1 ? one : T(0);
        T s = sigmoid_of(z);
        return order == 1 ? s : s * (one - s);
    }
    if (A == kSwish) {  // z * sigmoid(z)
        T s = sigmoid_of(z);
        if (order == 0) return z * s;
        if (order == 1) return s * (one + z * (one - s));
        return s * (one - s) * (T(2) + z * (one - T(2) * s));
    }
    return T(0);
}

template <typename scalar_t, int A>
__global__ void bias_act_kernel(
    const scalar_t* __restrict__ a,
    const scalar_t* __restrict__ bias,  // nullptr when there is no bias
    const scalar_t* __restrict__ xref,
    const scalar_t* __restrict__ aux,
    scalar_t* __restrict__ out,
    int64_t n,
    int64_t bias_len,     // size of the bias dimension
    int64_t bias_stride,  // memory stride of the bias dimension
    int mode,
    double alpha_d,
    double gain_d,
    double clamp_d)  // < 0: no clamping
{
    using T = at::opmath_type<scalar_t>;  // float for half/bfloat16, else the type itself
    const T alpha = T(alpha_d), gain = T(gain_d), clamp = T(clamp_d);
    const int64_t step = int64_t(blockDim.x) * gridDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
        const T b = bias ? T(bias[(i / bias_stride) % bias_len]) : T(0);
        if (mode == 0) {
            T y = act_eval<A>(T(a[i]) + b, alpha, 0) * gain;
            if (clamp >= T(0)) y = y < -clamp ? -clamp : (y > clamp ? clamp : y);  // keeps NaN
            out[i] = scalar_t(y);
            continue;
        }
        const T z = T(xref[i]) + b;
        T g = T(a[i]) * act_eval<A>(z, alpha, mode) * gain;
        if (mode == 2) g *= T(aux[i]);
        if (clamp >= T(0)) {
            const T y = act_eval<A>(z, alpha, 0) * gain;
            if (!(y >= -clamp && y <= clamp)) g = T(0);
        }
        out[i] = scalar_t(g);
    }
}

template <typename scalar_t>
void launch(const at::Tensor& a, const at::Tensor& b, const at::Tensor& xref, const at::Tensor& aux,
            at::Tensor& out, int64_t bias_len, int64_t bias_stride, int mode, int act,
            double alpha, double gain, double clamp)
{
    const int64_t n = a.numel();
    const int threads = 256;
    // Grid-stride loop: cap the grid, large tensors loop a few times per thread.
    const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 16);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const scalar_t* pb = b.numel() ? b.data_ptr<scalar_t>() : nullptr;
    const scalar_t* pa = a.data_ptr<scalar_t>();
    const scalar_t* px = xref.data_ptr<scalar_t>();
    const scalar_t* pq = aux.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
#define BIAS_ACT_CASE(A_)                                                                        \
    case A_:                                                                                     \
        bias_act_kernel<scalar_t, A_><<<blocks, threads, 0, stream>>>(                           \
            pa, pb, px, pq, po, n, bias_len, bias_stride, mode, alpha, gain, clamp);             \
        break;
    switch (act) {
        BIAS_ACT_CASE(kLinear)
        BIAS_ACT_CASE(kRelu)
        BIAS_ACT_CASE(kLrelu)
        BIAS_ACT_CASE(kTanh)
        BIAS_ACT_CASE(kSigmoid)
        BIAS_ACT_CASE(kElu)
        BIAS_ACT_CASE(kSelu)
        BIAS_ACT_CASE(kSoftplus)
        BIAS_ACT_CASE(kSwish)
        default: TORCH_CHECK(false, "bias_act: unknown activation id ", act);
    }
#undef BIAS_ACT_CASE
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// Called from bias_act.cpp after argument checks.
at::Tensor bias_act_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& xref, const at::Tensor& aux,
                         int64_t mode, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    const c10::cuda::CUDAGuard guard(a.device());
    at::Tensor out = at::empty_like(a);  // same layout as a (dense, possibly channels-last)
    if (a.numel() == 0) return out;
    // With a dense layout, element i sits at index (i / stride) % size along `dim`.
    const int64_t bias_len = b.numel() ? xref.size(dim) : 1;
    const int64_t bias_stride = (b.numel() && xref.size(dim) > 1) ? xref.stride(dim) : 1;   // size 1: any stride, even 0
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, a.scalar_type(), "bias_act_cuda", [&] {
        launch<scalar_t>(a, b, xref, aux, out, bias_len, bias_stride, int(mode), int(act), alpha, gain, clamp);
    });
    return out;
}
