"""Custom ops with StyleGAN2-ADA-compatible APIs: bias_act, upfirdn2d, conv2d_resample; and grid_sample
(torch's, with gradients of every order on every PyTorch 2.x: see grid_sample.py).

Each op has a plain-PyTorch reference (`impl='ref'`) and a CUDA kernel compiled on first use
(`impl='cuda'`); `impl='auto'` (the default) uses the kernel for CUDA tensors when it builds.
Importing this package or running on CPU never invokes a compiler.

Dtype contract (the one place it is written down; the reference and CUDA paths obey it alike, so a
CPU run under bf16 autocast sees the dtypes a GPU run sees):

Ops
- `bias_act(x, b)`, `upfirdn2d(x, f)`: output and gradients in x's dtype; math in float32 (float64 for
  float64 inputs); `b` is rounded to x's dtype, FIR taps stay float32. Autocast does not apply to them
  (a kernel cannot see it; the reference runs in `custom_ops.kernel_dtype_scope`).
- `conv2d_resample(x, w)`: `w` must have x's dtype; its convolutions follow autocast (bf16 under bf16
  autocast), its FIR steps follow the rule above.

Layers (training/networks) under bf16 autocast; in float32 everything is float32
- Parameters, buffers, gradients and optimiser state stay float32; weights are cast where they are used.
- Activations ("act" below) are bf16: every FC/conv output, the synthesis layers, attention outputs,
  discriminator blocks. A layer returns its input activation's dtype after any float32 detour.
- Float32 is kept for: pixel norm (`normalize_2nd_moment`), attention feature norms and softmax,
  styles and demodulation coefficients, the minibatch-stddev statistics, the tracked `w_avg` and its
  update, truncation, the k-GAN merge weights.
- Module boundaries are float32: the mapping returns w in float32, the synthesis returns the image in
  float32 (ToRGB), the loss casts logits to float32; losses, R1 / path-length penalties and `pl_mean`
  are float32.
"""
from . import bias_act, conv2d_resample, custom_ops, grid_sample, upfirdn2d

__all__ = ["bias_act", "conv2d_resample", "custom_ops", "grid_sample", "upfirdn2d"]
