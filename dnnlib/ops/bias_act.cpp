// Python binding and argument checks for the bias_act CUDA kernel (bias_act.cu).

#include <torch/extension.h>

at::Tensor bias_act_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& xref, const at::Tensor& aux,
                         int64_t mode, int64_t dim, int64_t act, double alpha, double gain, double clamp);

// Same shape, and the same stride along every dimension longer than 1: then one flat index addresses the
// same element in both. (Strides of size-1 dimensions are arbitrary: a tensor that PyTorch calls contiguous
// in one memory format may differ there from one made contiguous in another, e.g. [4, 16, 1, 1].)
static bool same_layout(const at::Tensor& a, const at::Tensor& t)
{
    if (t.sizes() != a.sizes()) return false;
    for (int64_t d = 0; d < a.dim(); ++d)
        if (a.size(d) > 1 && a.stride(d) != t.stride(d)) return false;
    return true;
}

// a, xref, aux: same shape, dtype, device and dense layout (one flat index addresses all three).
// b: 1-D bias of length xref.size(dim), or an empty tensor for none.
static at::Tensor bias_act(const at::Tensor& a, const at::Tensor& b, const at::Tensor& xref, const at::Tensor& aux,
                           int64_t mode, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(a.is_cuda(), "bias_act: tensors must be on a CUDA device");
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    TORCH_CHECK(a.is_non_overlapping_and_dense(), "bias_act: input must be dense");
    for (const at::Tensor* t : {&xref, &aux}) {
        TORCH_CHECK(t->device() == a.device(), "bias_act: all tensors must be on one device");
        TORCH_CHECK(t->scalar_type() == a.scalar_type(), "bias_act: all tensors must share a dtype");
        TORCH_CHECK(same_layout(a, *t), "bias_act: operands must share shape and memory layout");
    }
    if (b.numel() > 0) {
        TORCH_CHECK(b.device() == a.device() && b.scalar_type() == a.scalar_type(),
                    "bias_act: bias must match the input's device and dtype");
        TORCH_CHECK(b.dim() == 1 && b.is_contiguous(), "bias_act: bias must be a contiguous 1-D tensor");
        TORCH_CHECK(dim >= 0 && dim < a.dim() && b.size(0) == a.size(dim), "bias_act: bias length must match x.shape[dim]");
    }
    return bias_act_cuda(a, b, xref, aux, mode, dim, act, alpha, gain, clamp);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp (modes: 0 value, 1 grad, 2 second-order)");
}
