// Smoke test for the CUDA toolchain: nvcc test_nvcc.cu -o test_nvcc -run
// Prints one line from the host and one from a kernel; exits non-zero on any CUDA error.

#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

// Report the failing call and stop: a toolchain/driver mismatch shows up here, not as silence.
static void check(cudaError_t err, const char* what)
{
    if (err != cudaSuccess) {
        std::fprintf(stderr, "CUDA error in %s: %s (%s)\n", what, cudaGetErrorName(err), cudaGetErrorString(err));
        std::exit(1);
    }
}

__global__ void say_hello()
{
    printf("GPU says hello.\n");
}

int main()
{
    std::printf("CPU says hello.\n");
    std::fflush(stdout);  // keep the host line first even when stdout is a pipe
    say_hello<<<1, 1>>>();
    check(cudaGetLastError(), "kernel launch");
    check(cudaDeviceSynchronize(), "kernel execution");  // also flushes the device-side printf buffer
    return 0;
}
