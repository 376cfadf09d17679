// 2D multiresolution hash-grid encoding: forward and backward (table gradients) on CUDA.
// Must agree with renderers/nerf/ops/_torch_impl.py, which is the reference the tests compare against.
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda.h>
#include <cuda_runtime.h>

namespace {

constexpr uint32_t kHashPrime = 2654435761u;

__device__ __forceinline__ int64_t vertex_row(int i, int j, int res, int table_size, bool hashed) {
    if (!hashed) return static_cast<int64_t>(i) + static_cast<int64_t>(j) * (res + 1);
    uint32_t h = static_cast<uint32_t>(i) ^ (static_cast<uint32_t>(j) * kHashPrime);
    return static_cast<int64_t>(h % static_cast<uint32_t>(table_size));
}

// The cell of point n at one level: its lower vertex (i0, j0), the position inside it (fx, fy), and
// whether the level is hashed. Shared by the forward and backward kernels so both read the same rows.
struct Cell {
    int i0, j0, res;
    float fx, fy;
    bool hashed;
};

__device__ __forceinline__ Cell cell_of(const float* __restrict__ coords, int64_t n, int res, int table_size) {
    Cell c;
    c.res = res;
    c.hashed = static_cast<int64_t>(res + 1) * (res + 1) > table_size;
    float x = fminf(fmaxf(coords[n * 2 + 0], 0.f), 1.f) * res;
    float y = fminf(fmaxf(coords[n * 2 + 1], 0.f), 1.f) * res;
    c.i0 = min(static_cast<int>(floorf(x)), res - 1);
    c.j0 = min(static_cast<int>(floorf(y)), res - 1);
    c.fx = x - c.i0;
    c.fy = y - c.j0;
    return c;
}

__device__ __forceinline__ float corner_weight(const Cell& c, int di, int dj) {
    return (di ? c.fx : 1.f - c.fx) * (dj ? c.fy : 1.f - c.fy);
}

// One thread per (point, level): bilinear blend of the cell's four vertices.
__global__ void forward_kernel(const float* __restrict__ coords, const float* __restrict__ tables,
                               const int* __restrict__ resolutions, int64_t num_points, int num_levels,
                               int table_size, int num_features, float* __restrict__ out) {
    int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= num_points * num_levels) return;
    int64_t n = idx / num_levels;
    int level = static_cast<int>(idx % num_levels);
    Cell c = cell_of(coords, n, resolutions[level], table_size);
    const float* table = tables + static_cast<int64_t>(level) * table_size * num_features;
    float* dst = out + n * num_levels * num_features + static_cast<int64_t>(level) * num_features;
    for (int f = 0; f < num_features; ++f) dst[f] = 0.f;
#pragma unroll
    for (int corner = 0; corner < 4; ++corner) {
        int di = corner & 1, dj = corner >> 1;
        float w = corner_weight(c, di, dj);
        int64_t row = vertex_row(c.i0 + di, c.j0 + dj, c.res, table_size, c.hashed);
        const float* src = table + row * num_features;
        for (int f = 0; f < num_features; ++f) dst[f] += w * src[f];
    }
}

// One thread per (point, level): scatter the output gradient into the four vertices' rows.
__global__ void backward_kernel(const float* __restrict__ coords, const float* __restrict__ grad_out,
                                const int* __restrict__ resolutions, int64_t num_points, int num_levels,
                                int table_size, int num_features, float* __restrict__ grad_tables) {
    int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= num_points * num_levels) return;
    int64_t n = idx / num_levels;
    int level = static_cast<int>(idx % num_levels);
    Cell c = cell_of(coords, n, resolutions[level], table_size);
    float* table = grad_tables + static_cast<int64_t>(level) * table_size * num_features;
    const float* g = grad_out + n * num_levels * num_features + static_cast<int64_t>(level) * num_features;
#pragma unroll
    for (int corner = 0; corner < 4; ++corner) {
        int di = corner & 1, dj = corner >> 1;
        float w = corner_weight(c, di, dj);
        int64_t row = vertex_row(c.i0 + di, c.j0 + dj, c.res, table_size, c.hashed);
        for (int f = 0; f < num_features; ++f) atomicAdd(table + row * num_features + f, w * g[f]);
    }
}

void check(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

}  // namespace

torch::Tensor hashgrid_forward(torch::Tensor coords, torch::Tensor tables, torch::Tensor resolutions) {
    check(coords, "coords");
    check(tables, "tables");
    check(resolutions, "resolutions");
    TORCH_CHECK(coords.scalar_type() == torch::kFloat32 && tables.scalar_type() == torch::kFloat32,
                "coords and tables must be float32");
    TORCH_CHECK(resolutions.scalar_type() == torch::kInt32, "resolutions must be int32");
    const int64_t num_points = coords.size(0);
    const int num_levels = static_cast<int>(tables.size(0));
    const int table_size = static_cast<int>(tables.size(1));
    const int num_features = static_cast<int>(tables.size(2));
    auto out = torch::empty({num_points, num_levels * num_features}, coords.options());
    const int64_t total = num_points * num_levels;
    if (total == 0) return out;
    const int threads = 256;
    const int blocks = static_cast<int>((total + threads - 1) / threads);
    forward_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        coords.data_ptr<float>(), tables.data_ptr<float>(), resolutions.data_ptr<int>(), num_points,
        num_levels, table_size, num_features, out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}

torch::Tensor hashgrid_backward(torch::Tensor coords, torch::Tensor grad_out, torch::Tensor resolutions,
                                int64_t table_size) {
    check(coords, "coords");
    check(grad_out, "grad_out");
    check(resolutions, "resolutions");
    const int64_t num_points = coords.size(0);
    const int num_levels = static_cast<int>(resolutions.size(0));
    const int num_features = static_cast<int>(grad_out.size(1) / num_levels);
    auto grad_tables = torch::zeros({num_levels, table_size, num_features}, grad_out.options());
    const int64_t total = num_points * num_levels;
    if (total == 0) return grad_tables;
    const int threads = 256;
    const int blocks = static_cast<int>((total + threads - 1) / threads);
    backward_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        coords.data_ptr<float>(), grad_out.data_ptr<float>(), resolutions.data_ptr<int>(), num_points,
        num_levels, static_cast<int>(table_size), num_features, grad_tables.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return grad_tables;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &hashgrid_forward, "2D hash-grid encoding, forward");
    m.def("backward", &hashgrid_backward, "2D hash-grid encoding, table gradients");
}
