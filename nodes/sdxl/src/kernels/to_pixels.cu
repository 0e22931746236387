// Packed planes to packed pixels for 16-bit elements: out[b][p][c] = in[b][c][p], for images
// (`p` over height x width) and convolution filters (`b` the output channel, `p` over the
// kernel's positions). Each thread writes eight consecutive channels of one pixel as one
// 16-byte store; `channels` is a multiple of 8.

extern "C" __global__ void planes_to_pixels(
    const half_bits* __restrict__ in, half_bits* __restrict__ out, long long chunks, int channels,
    int positions) {
    const int chunks_per_pixel = channels / 8;
    for (long long chunk = blockIdx.x * (long long)blockDim.x + threadIdx.x; chunk < chunks;
         chunk += (long long)gridDim.x * blockDim.x) {
        const long long pixel = chunk / chunks_per_pixel;  // b * positions + p
        const long long channel = (chunk - pixel * chunks_per_pixel) * 8;
        const long long b = pixel / positions;
        const long long p = pixel - b * positions;
        const half_bits* source = in + (b * channels + channel) * positions + p;
        uint4 bits;
        half_bits* values = reinterpret_cast<half_bits*>(&bits);
        #pragma unroll
        for (int i = 0; i < 8; ++i) values[i] = source[i * (long long)positions];
        *reinterpret_cast<uint4*>(out + chunk * 8) = bits;
    }
}

// The same for few positions a plane (convolution filters: 9 for 3x3, 1 for 1x1): each thread
// takes eight channels of one `b` and every position, so it reads eight runs of `positions`
// consecutive values (a warp, one contiguous span) and writes one 16-byte store a position.
extern "C" __global__ void few_planes_to_pixels(
    const half_bits* __restrict__ in, half_bits* __restrict__ out, long long chunks, int channels,
    int positions) {
    const int chunks_per_row = channels / 8;
    for (long long chunk = blockIdx.x * (long long)blockDim.x + threadIdx.x; chunk < chunks;
         chunk += (long long)gridDim.x * blockDim.x) {
        const long long b = chunk / chunks_per_row;  // the image, or the filter's output channel
        const long long channel = (chunk - b * chunks_per_row) * 8;
        const half_bits* source = in + (b * channels + channel) * positions;
        half_bits* target = out + b * channels * (long long)positions + channel;
        for (int p = 0; p < positions; ++p) {
            uint4 bits;
            half_bits* values = reinterpret_cast<half_bits*>(&bits);
            #pragma unroll
            for (int i = 0; i < 8; ++i) values[i] = source[i * positions + p];
            *reinterpret_cast<uint4*>(target + (long long)p * channels) = bits;
        }
    }
}
