// The convolutions' epilogue, in place on cuDNN's output: y[n, c, :, :] += bias[c], plus
// residual[n, c, :, :] when `residual` is not null, f32 arithmetic, eight elements per thread,
// for f16 (`_f16`) and bf16 (`_bf16`) tensors. On packed planes (`channel_bias_add`) `hw`
// (height * width) is a multiple of 8, so the eight share a channel; channels-last
// (`pixel_bias_add`, `[n, h, w, c]`) `channels` is, so the eight are consecutive channels of a
// pixel.

template <typename T>
__device__ void channel_bias_add(
    half_bits* __restrict__ y, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ residual, long long elements, int hw, int channels) {
    const long long chunks = elements / 8;
    for (long long chunk = blockIdx.x * (long long)blockDim.x + threadIdx.x; chunk < chunks;
         chunk += (long long)gridDim.x * blockDim.x) {
        const long long at = chunk * 8;
        const float b = T::to_float(bias[(at / hw) % channels]);
        float v[8];
        load8_as<T>(y + at, v);
        if (residual) {
            float r[8];
            load8_as<T>(residual + at, r);
            #pragma unroll
            for (int i = 0; i < 8; ++i) v[i] += r[i];
        }
        #pragma unroll
        for (int i = 0; i < 8; ++i) v[i] += b;
        store8_as<T>(y + at, v);
    }
}

template <typename T>
__device__ void pixel_bias_add(
    half_bits* __restrict__ y, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ residual, long long elements, int channels) {
    const long long chunks = elements / 8;
    for (long long chunk = blockIdx.x * (long long)blockDim.x + threadIdx.x; chunk < chunks;
         chunk += (long long)gridDim.x * blockDim.x) {
        const long long at = chunk * 8;
        float v[8], b[8];
        load8_as<T>(y + at, v);
        load8_as<T>(bias + at % channels, b);
        if (residual) {
            float r[8];
            load8_as<T>(residual + at, r);
            #pragma unroll
            for (int i = 0; i < 8; ++i) v[i] += r[i];
        }
        #pragma unroll
        for (int i = 0; i < 8; ++i) v[i] += b[i];
        store8_as<T>(y + at, v);
    }
}

extern "C" __global__ void channel_bias_add_f16(
    half_bits* __restrict__ y, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ residual, long long elements, int hw, int channels) {
    channel_bias_add<F16>(y, bias, residual, elements, hw, channels);
}

extern "C" __global__ void channel_bias_add_bf16(
    half_bits* __restrict__ y, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ residual, long long elements, int hw, int channels) {
    channel_bias_add<BF16>(y, bias, residual, elements, hw, channels);
}

extern "C" __global__ void pixel_bias_add_f16(
    half_bits* __restrict__ y, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ residual, long long elements, int hw, int channels) {
    pixel_bias_add<F16>(y, bias, residual, elements, channels);
}

extern "C" __global__ void pixel_bias_add_bf16(
    half_bits* __restrict__ y, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ residual, long long elements, int hw, int channels) {
    pixel_bias_add<BF16>(y, bias, residual, elements, channels);
}
