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
// spread over the whole device: `group_norm_pixels_partials_*` sums each group's values and
// squares over a chunk of pixels per block (grid: chunks x batch), `group_norm_pixels_stats`
// turns the chunks' sums into each group's mean and inverse deviation (one warp per group, a
// block per image), and `group_norm_pixels_*` normalizes, a chunk of pixels per block. A
// thread takes channels in pairs (groups have an even number of channels), so every warp's
// reads are whole consecutive runs of a pixel's channels. Sums are in f32 and in a fixed
// order, so the result does not depend on how blocks are scheduled.

#define PIXEL_THREADS 256
// Channel pairs a thread takes: up to 2560 channels at 256 threads.
#define MAX_PAIRS_PER_THREAD 5

// Two consecutive values as floats.
template <typename T>
__device__ __forceinline__ void load2_as(const half_bits* p, float& low, float& high) {
    const half2_bits bits = *reinterpret_cast<const half2_bits*>(p);
    low = T::to_float((half_bits)(bits & 0xffffu));
    high = T::to_float((half_bits)(bits >> 16));
}

template <typename T>
__device__ void group_norm_pixels_partials(
    const half_bits* __restrict__ x, const half_bits* __restrict__ shift, float* __restrict__ partials,
    int hw, int channels, int groups, int pixels_per_chunk) {
    extern __shared__ float pair_sums[];  // [channels / 2][2]
    const int batch = blockIdx.y, chunk = blockIdx.x, pairs = channels / 2;
    const int first = chunk * pixels_per_chunk, last = min(first + pixels_per_chunk, hw);
    const half_bits* image = x + (long long)batch * hw * channels;
    float sum[MAX_PAIRS_PER_THREAD], squares[MAX_PAIRS_PER_THREAD], added[MAX_PAIRS_PER_THREAD][2];
    #pragma unroll
    for (int i = 0; i < MAX_PAIRS_PER_THREAD; ++i) {
        sum[i] = squares[i] = added[i][0] = added[i][1] = 0.f;
        const int pair = threadIdx.x + i * blockDim.x;
        if (shift && pair < pairs) load2_as<T>(shift + batch * channels + 2 * pair, added[i][0], added[i][1]);
    }
    for (int pixel = first; pixel < last; ++pixel) {
        #pragma unroll
        for (int i = 0; i < MAX_PAIRS_PER_THREAD; ++i) {
            const int pair = threadIdx.x + i * blockDim.x;
            if (pair < pairs) {
                float a, b;
                load2_as<T>(image + (long long)pixel * channels + 2 * pair, a, b);
                a += added[i][0];
                b += added[i][1];
                sum[i] += a + b;
                squares[i] += a * a + b * b;
            }
        }
    }
    #pragma unroll
    for (int i = 0; i < MAX_PAIRS_PER_THREAD; ++i) {
        const int pair = threadIdx.x + i * blockDim.x;
        if (pair < pairs) {
            pair_sums[2 * pair] = sum[i];
            pair_sums[2 * pair + 1] = squares[i];
        }
    }
    __syncthreads();
    const int pairs_per_group = pairs / groups;
    for (int group = threadIdx.x; group < groups; group += blockDim.x) {
        float s = 0.f, q = 0.f;
        for (int p = group * pairs_per_group; p < (group + 1) * pairs_per_group; ++p) {
            s += pair_sums[2 * p];
            q += pair_sums[2 * p + 1];
        }
        float* out = partials + (((long long)batch * gridDim.x + chunk) * groups + group) * 2;
        out[0] = s;
        out[1] = q;
    }
}

extern "C" __global__ void __launch_bounds__(PIXEL_THREADS) group_norm_pixels_partials_f16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ shift, float* __restrict__ partials,
    int hw, int channels, int groups, int pixels_per_chunk) {
    group_norm_pixels_partials<F16>(x, shift, partials, hw, channels, groups, pixels_per_chunk);
}

extern "C" __global__ void __launch_bounds__(PIXEL_THREADS) group_norm_pixels_partials_bf16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ shift, float* __restrict__ partials,
    int hw, int channels, int groups, int pixels_per_chunk) {
    group_norm_pixels_partials<BF16>(x, shift, partials, hw, channels, groups, pixels_per_chunk);
}

// One block of `groups` warps per image: warp `g` adds group g's `chunks` partial sums (lane
// by lane, then across the warp in a fixed pattern) and writes its mean and inverse deviation.
extern "C" __global__ void group_norm_pixels_stats(
    const float* __restrict__ partials, float* __restrict__ stats, int chunks, int groups, long long count,
    float eps) {
    const int group = threadIdx.x / 32, lane = threadIdx.x % 32, batch = blockIdx.x;
    float s = 0.f, q = 0.f;
    for (int chunk = lane; chunk < chunks; chunk += 32) {
        const float* p = partials + (((long long)batch * chunks + chunk) * groups + group) * 2;
        s += p[0];
        q += p[1];
    }
    #pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        s += __shfl_xor_sync(0xffffffffu, s, offset);
        q += __shfl_xor_sync(0xffffffffu, q, offset);
    }
    if (lane == 0) {
        const float mean = s / (float)count;
        const float variance = fmaxf(q / (float)count - mean * mean, 0.f);
        stats[(batch * groups + group) * 2] = mean;
        stats[(batch * groups + group) * 2 + 1] = rsqrtf(variance + eps);
    }
}

template <typename T>
__device__ void group_norm_pixels(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ shift, const float* __restrict__ stats, half_bits* __restrict__ out,
    int hw, int channels, int groups, int pixels_per_chunk, int silu) {
    const int batch = blockIdx.y, chunk = blockIdx.x, pairs = channels / 2;
    const int first = chunk * pixels_per_chunk, last = min(first + pixels_per_chunk, hw);
    const int channels_per_group = channels / groups;
    const long long base = (long long)batch * hw * channels;
    // y = x * scale + offset per channel, the shift, mean and deviation folded in.
    float scale[MAX_PAIRS_PER_THREAD][2], offset[MAX_PAIRS_PER_THREAD][2];
    #pragma unroll
    for (int i = 0; i < MAX_PAIRS_PER_THREAD; ++i) {
        const int pair = threadIdx.x + i * blockDim.x;
        if (pair >= pairs) continue;
        const int group = 2 * pair / channels_per_group;
        const float mean = stats[(batch * groups + group) * 2], inverse_std = stats[(batch * groups + group) * 2 + 1];
        float w[2], b[2], added[2] = {0.f, 0.f};
        load2_as<T>(weight + 2 * pair, w[0], w[1]);
        load2_as<T>(bias + 2 * pair, b[0], b[1]);
        if (shift) load2_as<T>(shift + batch * channels + 2 * pair, added[0], added[1]);
        #pragma unroll
        for (int j = 0; j < 2; ++j) {
            scale[i][j] = inverse_std * w[j];
            offset[i][j] = b[j] + (added[j] - mean) * scale[i][j];
        }
    }
    for (int pixel = first; pixel < last; ++pixel) {
        #pragma unroll
        for (int i = 0; i < MAX_PAIRS_PER_THREAD; ++i) {
            const int pair = threadIdx.x + i * blockDim.x;
            if (pair >= pairs) continue;
            const long long at = base + (long long)pixel * channels + 2 * pair;
            float v[2];
            load2_as<T>(x + at, v[0], v[1]);
            #pragma unroll
            for (int j = 0; j < 2; ++j) {
                v[j] = v[j] * scale[i][j] + offset[i][j];
                if (silu) v[j] = v[j] / (1.f + __expf(-v[j]));
            }
            *reinterpret_cast<half2_bits*>(out + at) = T::pack2(v[0], v[1]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(PIXEL_THREADS) group_norm_pixels_f16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ shift, const float* __restrict__ stats, half_bits* __restrict__ out,
    int hw, int channels, int groups, int pixels_per_chunk, int silu) {
    group_norm_pixels<F16>(x, weight, bias, shift, stats, out, hw, channels, groups, pixels_per_chunk, silu);
}

extern "C" __global__ void __launch_bounds__(PIXEL_THREADS) group_norm_pixels_bf16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ weight, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ shift, const float* __restrict__ stats, half_bits* __restrict__ out,
    int hw, int channels, int groups, int pixels_per_chunk, int silu) {
    group_norm_pixels<BF16>(x, weight, bias, shift, stats, out, hw, channels, groups, pixels_per_chunk, silu);
}
