// Element-wise epilogues of the UNet's linear layers, f16 in and out with f32 arithmetic, eight
// elements per thread: what candle would do in two or three launches of broadcasting kernels.

// out[r, j] = y[r, j] + bias[j] (+ residual[r, j] when `residual` is not null), for a
// row-major `[rows, width]` with `width` a multiple of 8.
extern "C" __global__ void bias_add_f16(
    const half_bits* __restrict__ y, const half_bits* __restrict__ bias,
    const half_bits* __restrict__ residual, half_bits* __restrict__ out,
    long long rows, int width) {
    const long long chunks = rows * (width / 8);
    for (long long chunk = blockIdx.x * (long long)blockDim.x + threadIdx.x; chunk < chunks;
         chunk += (long long)gridDim.x * blockDim.x) {
        const long long at = chunk * 8;
        const int col = (int)(at % width);
        float v[8], b[8];
        load8(y + at, v);
        load8(bias + col, b);
        #pragma unroll
        for (int i = 0; i < 8; ++i) v[i] += b[i];
        if (residual) {
            float r[8];
            load8(residual + at, r);
            #pragma unroll
            for (int i = 0; i < 8; ++i) v[i] += r[i];
        }
        store8(out + at, v);
    }
}

// GEGLU with the projection's bias: for `x` `[rows, 2 * inner]` (the projection without its
// bias), out[r, j] = (x[r, j] + bias[j]) * gelu(x[r, inner + j] + bias[inner + j]), GELU exact
// (erf), `inner` a multiple of 8.
extern "C" __global__ void geglu_f16(
    const half_bits* __restrict__ x, const half_bits* __restrict__ bias,
    half_bits* __restrict__ out, long long rows, int inner) {
    const long long chunks = rows * (inner / 8);
    for (long long chunk = blockIdx.x * (long long)blockDim.x + threadIdx.x; chunk < chunks;
         chunk += (long long)gridDim.x * blockDim.x) {
        const long long row = chunk / (inner / 8);
        const int col = (int)(chunk % (inner / 8)) * 8;
        const half_bits* in_row = x + row * 2 * inner;
        float value[8], gate[8], value_bias[8], gate_bias[8], result[8];
        load8(in_row + col, value);
        load8(in_row + inner + col, gate);
        load8(bias + col, value_bias);
        load8(bias + inner + col, gate_bias);
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float g = gate[i] + gate_bias[i];
            result[i] = (value[i] + value_bias[i]) * 0.5f * g * (1.f + erff(g * 0.70710678118654752f));
        }
        store8(out + row * inner + col, result);
    }
}
