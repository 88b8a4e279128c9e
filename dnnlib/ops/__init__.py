"""Custom ops with StyleGAN2-ADA-compatible APIs: bias_act, upfirdn2d, conv2d_resample.

Each op has a plain-PyTorch reference (`impl='ref'`) and a CUDA kernel compiled on first use
(`impl='cuda'`); `impl='auto'` (the default) uses the kernel for CUDA tensors when it builds.
Importing this package or running on CPU never invokes a compiler.
"""
from . import bias_act, conv2d_resample, custom_ops, upfirdn2d

__all__ = ["bias_act", "conv2d_resample", "custom_ops", "upfirdn2d"]
