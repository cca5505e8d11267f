// Scratch memory for the CUDA kernels that need it (the backward's fp32 dQ/dBias
// accumulators and row sums). One grow-only buffer per (device, stream): work on
// one stream is ordered, so reusing its buffer is race-free, and two streams never
// share one. Growth uses stream-ordered cudaMallocAsync/cudaFreeAsync, so nothing
// is allocated on the hot path once the buffer has reached its working size. While
// the stream is being captured into a graph the buffer cannot grow: run the call
// once before capturing (the error says so).
#pragma once
#include <cstddef>

#include <cuda_runtime.h>

namespace flashattn::detail::cuda {

// At least `bytes` of device memory (256-byte aligned) usable in stream order on
// `stream` until the next workspace() call on the same stream.
void* workspace(std::size_t bytes, cudaStream_t stream);

}  // namespace flashattn::detail::cuda
