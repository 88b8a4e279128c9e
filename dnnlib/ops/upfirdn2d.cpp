// Python binding and argument checks for the upfirdn2d CUDA kernel (upfirdn2d.cu).

#include <torch/extension.h>

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y,
                          int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                          int64_t pad_y0, int64_t pad_y1, bool flip, double gain);

static at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y,
                            int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                            int64_t pad_y0, int64_t pad_y1, bool flip, double gain)
{
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be on a CUDA device");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [batch, channels, height, width]");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: filter must be on x's device");
    TORCH_CHECK(f.scalar_type() == at::kFloat && f.dim() == 2 && f.numel() > 0,
                "upfirdn2d: filter must be a non-empty float32 [fh, fw] tensor");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: factors must be >= 1");
    // Keep the kernel's int arithmetic and int64 element indices in range.
    TORCH_CHECK(x.size(2) * up_y < (int64_t(1) << 31) && x.size(3) * up_x < (int64_t(1) << 31),
                "upfirdn2d: image too large");
    return upfirdn2d_cuda(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR-filter and downsample a batch of 2-D images");
}
