// LayerNorm over the last dimension of a contiguous f16 tensor, with the affine weight and bias,
// in one launch: one warp per row, eight rows per block. A warp reads its row once, sixteen bytes
// a lane at a time, keeps it in registers for both passes of the statistics (mean, then the mean
// square deviation, in f32) and writes it once. Rows are `width` wide, a multiple of 8 of at
// most 32 * 8 * MAX_CHUNKS halves.

#define WARPS 8
#define MAX_CHUNKS 8

__device__ __forceinline__ float warp_sum(float value) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}

extern "C" __global__ void __launch_bounds__(WARPS * 32) layer_norm_f16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight,
    const half_bits* __restrict__ bias, half_bits* __restrict__ out, int rows, int width, float eps) {
    const int row = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const long long start = (long long)row * width;
    const int chunks = width / 8;

    float v[MAX_CHUNKS][8];
    float sum = 0.f;
    #pragma unroll
    for (int i = 0; i < MAX_CHUNKS; ++i) {
        const int chunk = lane + i * 32;
        if (chunk < chunks) {
            load8(x + start + chunk * 8, v[i]);
            #pragma unroll
            for (int j = 0; j < 8; ++j) sum += v[i][j];
        }
    }
    const float mean = warp_sum(sum) / (float)width;

    float squares = 0.f;
    #pragma unroll
    for (int i = 0; i < MAX_CHUNKS; ++i) {
        if (lane + i * 32 < chunks) {
            #pragma unroll
            for (int j = 0; j < 8; ++j) squares += (v[i][j] - mean) * (v[i][j] - mean);
        }
    }
    const float inverse_std = rsqrtf(warp_sum(squares) / (float)width + eps);

    #pragma unroll
    for (int i = 0; i < MAX_CHUNKS; ++i) {
        const int chunk = lane + i * 32;
        if (chunk < chunks) {
            float w[8], b[8];
            load8(weight + chunk * 8, w);
            load8(bias + chunk * 8, b);
            #pragma unroll
            for (int j = 0; j < 8; ++j) v[i][j] = (v[i][j] - mean) * inverse_std * w[j] + b[j];
            store8(out + start + chunk * 8, v[i]);
        }
    }
}
