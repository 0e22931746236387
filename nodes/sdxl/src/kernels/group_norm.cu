// GroupNorm over a contiguous `[batch, channels, height, width]` f16 (`_f16`) or bf16 (`_bf16`) tensor, with the affine
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

template <typename T>
__device__ void group_norm(
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
        load8_as<T>(in + at, v);
        const float s = group_shift ? T::to_float(group_shift[at / hw]) : 0.f;
        #pragma unroll
        for (int i = 0; i < 8; ++i) sum += v[i] + s;
    }
    const float mean = block_sum(sum, scratch) / (float)count;

    float squares = 0.f;
    for (long long at = threadIdx.x * 8LL; at < count; at += THREADS * 8LL) {
        float v[8];
        load8_as<T>(in + at, v);
        const float s = (group_shift ? T::to_float(group_shift[at / hw]) : 0.f) - mean;
        #pragma unroll
        for (int i = 0; i < 8; ++i) squares += (v[i] + s) * (v[i] + s);
    }
    const float inverse_std = rsqrtf(block_sum(squares, scratch) / (float)count + eps);

    for (long long at = threadIdx.x * 8LL; at < count; at += THREADS * 8LL) {
        const int channel = first_channel + (int)(at / hw);
        const float scale = inverse_std * T::to_float(weight[channel]);
        const float added = group_shift ? T::to_float(group_shift[at / hw]) : 0.f;
        const float offset = T::to_float(bias[channel]) + (added - mean) * scale;
        float v[8];
        load8_as<T>(in + at, v);
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            v[i] = v[i] * scale + offset;
            if (silu) v[i] = v[i] / (1.f + __expf(-v[i]));
        }
        store8_as<T>(out + base + at, v);
    }
}

extern "C" __global__ void __launch_bounds__(THREADS) group_norm_f16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight,
    const half_bits* __restrict__ bias, const half_bits* __restrict__ shift,
    half_bits* __restrict__ out, int groups, int channels_per_group, int hw, float eps, int silu) {
    group_norm<F16>(x, weight, bias, shift, out, groups, channels_per_group, hw, eps, silu);
}

extern "C" __global__ void __launch_bounds__(THREADS) group_norm_bf16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight,
    const half_bits* __restrict__ bias, const half_bits* __restrict__ shift,
    half_bits* __restrict__ out, int groups, int channels_per_group, int hw, float eps, int silu) {
    group_norm<BF16>(x, weight, bias, shift, out, groups, channels_per_group, hw, eps, silu);
}

// The same over a channels-last image, `[batch, hw, channels]`, in three launches that each
// spread over the whole device: `group_norm_pixels_partials_*` sums each channel's values and
// squares over a chunk of pixels per block (grid: chunks x batch) and adds them up by group,
// `group_norm_pixels_stats` turns the chunks' sums into each group's mean and inverse deviation
// (one warp per group, a block per image), and `group_norm_pixels_*` normalizes, a chunk of
// pixels per block. A block is `channels / 8` threads across (eight consecutive channels each,
// read and written 16 bytes at a time, whatever group they fall in) by `blockDim.y` rows of
// pixels. Sums are in f32 and in a fixed order, so the result does not depend on how blocks are
// scheduled. `channels` is a multiple of 8, at most 8 x 320.

// The shift's eight values at `channel` of image `batch`, zeros without one.
template <typename T>
__device__ __forceinline__ void load_shift8(const half_bits* shift, int batch, int channels, int channel, float* s) {
    if (shift) {
        load8_as<T>(shift + (long long)batch * channels + channel, s);
    } else {
        #pragma unroll
        for (int i = 0; i < 8; ++i) s[i] = 0.f;
    }
}

template <typename T>
__device__ void group_norm_pixels_partials(
    const half_bits* __restrict__ x, const half_bits* __restrict__ shift, float2* __restrict__ partials,
    int hw, int channels, int groups, int pixels_per_chunk) {
    extern __shared__ float2 channel_sums[];  // [blockDim.y][channels]: (sum, sum of squares)
    const int batch = blockIdx.y, chunk = blockIdx.x;
    const int channel = threadIdx.x * 8;
    const int first = chunk * pixels_per_chunk, last = min(first + pixels_per_chunk, hw);
    const half_bits* image = x + (long long)batch * hw * channels;
    float added[8], sum[8], squares[8];
    load_shift8<T>(shift, batch, channels, channel, added);
    #pragma unroll
    for (int i = 0; i < 8; ++i) sum[i] = squares[i] = 0.f;
    for (int pixel = first + threadIdx.y; pixel < last; pixel += blockDim.y) {
        float v[8];
        load8_as<T>(image + (long long)pixel * channels + channel, v);
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float a = v[i] + added[i];
            sum[i] += a;
            squares[i] += a * a;
        }
    }
    #pragma unroll
    for (int i = 0; i < 8; ++i) channel_sums[threadIdx.y * channels + channel + i] = make_float2(sum[i], squares[i]);
    __syncthreads();
    // Each channel's rows added into row 0 by the thread that owns the channel's column.
    const int threads = blockDim.x * blockDim.y, me = threadIdx.y * blockDim.x + threadIdx.x;
    for (int c = me; c < channels; c += threads) {
        float2 total = channel_sums[c];
        for (int row = 1; row < blockDim.y; ++row) {
            total.x += channel_sums[row * channels + c].x;
            total.y += channel_sums[row * channels + c].y;
        }
        channel_sums[c] = total;
    }
    __syncthreads();
    const int channels_per_group = channels / groups;
    for (int group = me; group < groups; group += threads) {
        float2 total = make_float2(0.f, 0.f);
        for (int c = group * channels_per_group; c < (group + 1) * channels_per_group; ++c) {
            total.x += channel_sums[c].x;
            total.y += channel_sums[c].y;
        }
        partials[((long long)batch * groups + group) * gridDim.x + chunk] = total;
    }
}

extern "C" __global__ void group_norm_pixels_partials_f16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ shift, float2* __restrict__ partials,
    int hw, int channels, int groups, int pixels_per_chunk) {
    group_norm_pixels_partials<F16>(x, shift, partials, hw, channels, groups, pixels_per_chunk);
}

extern "C" __global__ void group_norm_pixels_partials_bf16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ shift, float2* __restrict__ partials,
    int hw, int channels, int groups, int pixels_per_chunk) {
    group_norm_pixels_partials<BF16>(x, shift, partials, hw, channels, groups, pixels_per_chunk);
}

// One block of `groups` warps per image: warp `g` adds group g's `chunks` partial sums (lanes
// read consecutive chunks, then add across the warp in a fixed pattern) and writes its mean and
// inverse deviation.
extern "C" __global__ void group_norm_pixels_stats(
    const float2* __restrict__ partials, float2* __restrict__ stats, int chunks, int groups, long long count,
    float eps) {
    const int group = threadIdx.x / 32, lane = threadIdx.x % 32, batch = blockIdx.x;
    const float2* sums = partials + ((long long)batch * groups + group) * chunks;
    float s = 0.f, q = 0.f;
    for (int chunk = lane; chunk < chunks; chunk += 32) {
        const float2 p = sums[chunk];
        s += p.x;
        q += p.y;
    }
    #pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        s += __shfl_xor_sync(0xffffffffu, s, offset);
        q += __shfl_xor_sync(0xffffffffu, q, offset);
    }
    if (lane == 0) {
        const float mean = s / (float)count;
        const float variance = fmaxf(q / (float)count - mean * mean, 0.f);
        stats[batch * groups + group] = make_float2(mean, rsqrtf(variance + eps));
    }
}

template <typename T>
__device__ void group_norm_pixels(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ shift, const float2* __restrict__ stats, half_bits* __restrict__ out,
    int hw, int channels, int groups, int pixels_per_chunk, int silu) {
    const int batch = blockIdx.y, chunk = blockIdx.x;
    const int channel = threadIdx.x * 8;
    const int first = chunk * pixels_per_chunk, last = min(first + pixels_per_chunk, hw);
    const int channels_per_group = channels / groups;
    const long long base = (long long)batch * hw * channels;
    // y = x * scale + offset per channel, the shift, mean and deviation folded in.
    float scale[8], offset[8], w[8], b[8], added[8];
    load8_as<T>(weight + channel, w);
    load8_as<T>(bias + channel, b);
    load_shift8<T>(shift, batch, channels, channel, added);
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
        const float2 group = stats[batch * groups + (channel + i) / channels_per_group];
        scale[i] = group.y * w[i];
        offset[i] = b[i] + (added[i] - group.x) * scale[i];
    }
    for (int pixel = first + threadIdx.y; pixel < last; pixel += blockDim.y) {
        const long long at = base + (long long)pixel * channels + channel;
        float v[8];
        load8_as<T>(x + at, v);
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            v[i] = v[i] * scale[i] + offset[i];
            if (silu) v[i] = v[i] / (1.f + __expf(-v[i]));
        }
        store8_as<T>(out + at, v);
    }
}

extern "C" __global__ void group_norm_pixels_f16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ shift, const float2* __restrict__ stats, half_bits* __restrict__ out,
    int hw, int channels, int groups, int pixels_per_chunk, int silu) {
    group_norm_pixels<F16>(x, weight, bias, shift, stats, out, hw, channels, groups, pixels_per_chunk, silu);
}

extern "C" __global__ void group_norm_pixels_bf16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ shift, const float2* __restrict__ stats, half_bits* __restrict__ out,
    int hw, int channels, int groups, int pixels_per_chunk, int silu) {
    group_norm_pixels<BF16>(x, weight, bias, shift, stats, out, hw, channels, groups, pixels_per_chunk, silu);
}
