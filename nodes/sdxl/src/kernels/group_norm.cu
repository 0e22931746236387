// GroupNorm over a contiguous `[batch, channels, height, width]` f16 tensor, with the affine
// weight and bias and optionally SiLU after it, in one launch: one block per (batch, group),
// statistics in f32 by two passes (mean, then the mean square deviation), then one pass that
// writes. Each group's `channels_per_group * hw` elements are contiguous; `hw` is a multiple of 8.
// When `shift` (`[batch, channels]`) is not null, it is added to x per channel before anything
// else: the resnets' time embedding, which would otherwise take its own broadcasting pass.

#define THREADS 1024

__device__ float block_sum(float value, float* scratch) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    value = lane < blockDim.x / 32 ? scratch[lane] : 0.f;
    #pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}

extern "C" __global__ void __launch_bounds__(THREADS) group_norm_f16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight,
    const half_bits* __restrict__ bias, const half_bits* __restrict__ shift,
    half_bits* __restrict__ out, int groups, int channels_per_group, int hw, float eps, int silu) {
    __shared__ float scratch[32];
    const long long count = (long long)channels_per_group * hw;
    const long long base = blockIdx.x * count;
    const int first_channel = (blockIdx.x % groups) * channels_per_group;
    const half_bits* in = x + base;
    // The shift of the group's first channel; channel `first_channel + at / hw` is `at / hw` on.
    const half_bits* group_shift = shift ? shift + (blockIdx.x / groups) * groups * channels_per_group + first_channel : 0;

    float sum = 0.f;
    for (long long at = threadIdx.x * 8LL; at < count; at += THREADS * 8LL) {
        float v[8];
        load8(in + at, v);
        const float s = group_shift ? half_to_float(group_shift[at / hw]) : 0.f;
        #pragma unroll
        for (int i = 0; i < 8; ++i) sum += v[i] + s;
    }
    const float mean = block_sum(sum, scratch) / (float)count;

    float squares = 0.f;
    for (long long at = threadIdx.x * 8LL; at < count; at += THREADS * 8LL) {
        float v[8];
        load8(in + at, v);
        const float s = (group_shift ? half_to_float(group_shift[at / hw]) : 0.f) - mean;
        #pragma unroll
        for (int i = 0; i < 8; ++i) squares += (v[i] + s) * (v[i] + s);
    }
    const float inverse_std = rsqrtf(block_sum(squares, scratch) / (float)count + eps);

    for (long long at = threadIdx.x * 8LL; at < count; at += THREADS * 8LL) {
        const int channel = first_channel + (int)(at / hw);
        const float scale = inverse_std * half_to_float(weight[channel]);
        const float added = group_shift ? half_to_float(group_shift[at / hw]) : 0.f;
        const float offset = half_to_float(bias[channel]) + (added - mean) * scale;
        float v[8];
        load8(in + at, v);
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            v[i] = v[i] * scale + offset;
            if (silu) v[i] = v[i] / (1.f + __expf(-v[i]));
        }
        store8(out + base + at, v);
    }
}
