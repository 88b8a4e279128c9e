// upfirdn2d on CUDA: zero-insertion upsampling, padding/cropping, 2-D FIR filtering and decimation,
// fused into one gather per output pixel.
//
// For output pixel (oy, ox) the filter window starts at (oy*down_y - pad_y0, ox*down_x - pad_x0) in
// the (virtual) upsampled image. Only every up-th row/column of that image holds an input pixel, so
// the loops visit just those taps instead of multiplying by inserted zeros.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace {

struct FirParams {
    int64_t in_h, in_w, out_h, out_w, planes;  // planes = batch * channels
    int up_x, up_y, down_x, down_y;
    int pad_x0, pad_y0;
    int f_h, f_w;
    bool flip;  // true: correlate with f as stored; false: convolve (read f reversed)
    double gain;  // double so float64 inputs keep full precision
};

// Smallest k >= 0 with (start + k) divisible by m.
__device__ __forceinline__ int first_aligned_tap(int64_t start, int m) {
    int r = int(((start % m) + m) % m);
    return r == 0 ? 0 : m - r;
}

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ out, FirParams p)
{
    using T = at::opmath_type<scalar_t>;
    const int64_t total = p.planes * p.out_h * p.out_w;
    const int64_t step = int64_t(blockDim.x) * gridDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int64_t ox = idx % p.out_w;
        const int64_t oy = (idx / p.out_w) % p.out_h;
        const int64_t plane = idx / (p.out_w * p.out_h);
        const scalar_t* src = x + plane * p.in_h * p.in_w;

        // Window origin in upsampled coordinates (may be negative: that part is padding).
        const int64_t y0 = oy * p.down_y - p.pad_y0;
        const int64_t x0 = ox * p.down_x - p.pad_x0;
        const int kx_first = first_aligned_tap(x0, p.up_x);

        T acc = T(0);
        for (int ky = first_aligned_tap(y0, p.up_y); ky < p.f_h; ky += p.up_y) {
            const int64_t uy = y0 + ky;
            if (uy < 0) continue;
            const int64_t iy = uy / p.up_y;
            if (iy >= p.in_h) break;
            const int fy = p.flip ? ky : p.f_h - 1 - ky;
            for (int kx = kx_first; kx < p.f_w; kx += p.up_x) {
                const int64_t ux = x0 + kx;
                if (ux < 0) continue;
                const int64_t ix = ux / p.up_x;
                if (ix >= p.in_w) break;
                const int fx = p.flip ? kx : p.f_w - 1 - kx;
                acc += T(src[iy * p.in_w + ix]) * T(f[fy * p.f_w + fx]);
            }
        }
        out[idx] = scalar_t(acc * T(p.gain));
    }
}

}  // namespace

// Called from upfirdn2d.cpp after argument checks. x: [N, C, H, W]; f: float32 [fh, fw].
at::Tensor upfirdn2d_cuda(const at::Tensor& x_in, const at::Tensor& f_in, int64_t up_x, int64_t up_y,
                          int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                          int64_t pad_y0, int64_t pad_y1, bool flip, double gain)
{
    const c10::cuda::CUDAGuard guard(x_in.device());
    const at::Tensor x = x_in.contiguous();
    const at::Tensor f = f_in.contiguous();

    FirParams p;
    p.in_h = x.size(2);
    p.in_w = x.size(3);
    p.planes = x.size(0) * x.size(1);
    p.up_x = int(up_x);
    p.up_y = int(up_y);
    p.down_x = int(down_x);
    p.down_y = int(down_y);
    p.pad_x0 = int(pad_x0);
    p.pad_y0 = int(pad_y0);
    p.f_h = int(f.size(0));
    p.f_w = int(f.size(1));
    p.flip = flip;
    p.gain = gain;
    // Valid filtering of the padded upsampled image, then every down-th sample.
    const int64_t span_h = p.in_h * up_y + pad_y0 + pad_y1 - p.f_h;
    const int64_t span_w = p.in_w * up_x + pad_x0 + pad_x1 - p.f_w;
    TORCH_CHECK(span_h >= 0 && span_w >= 0, "upfirdn2d: the padded image is smaller than the filter");
    p.out_h = span_h / down_y + 1;
    p.out_w = span_w / down_x + 1;

    at::Tensor out = at::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options());
    const int64_t total = out.numel();
    if (total == 0) return out;
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 16);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
        upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
            x.data_ptr<scalar_t>(), f.data_ptr<float>(), out.data_ptr<scalar_t>(), p);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}
