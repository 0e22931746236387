// The convolutions' epilogue, in place on cuDNN's output: y[n, c, :, :] += bias[c], plus
// residual[n, c, :, :] when `residual` is not null, f32 arithmetic, eight elements per thread.
// `hw` (height * width) is a multiple of 8, so the eight share a channel.

extern "C" __global__ void channel_bias_add_f16(
    half_bits* __restrict__ y, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ residual, long long elements, int hw, int channels) {
    const long long chunks = elements / 8;
    for (long long chunk = blockIdx.x * (long long)blockDim.x + threadIdx.x; chunk < chunks;
         chunk += (long long)gridDim.x * blockDim.x) {
        const long long at = chunk * 8;
        const float b = half_to_float(bias[(at / hw) % channels]);
        float v[8];
        load8(y + at, v);
        if (residual) {
            float r[8];
            load8(residual + at, r);
            #pragma unroll
            for (int i = 0; i < 8; ++i) v[i] += r[i];
        }
        #pragma unroll
        for (int i = 0; i < 8; ++i) v[i] += b;
        store8(y + at, v);
    }
}
