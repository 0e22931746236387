// 8-bit floats (e4m3) to and from the dtypes layers compute in, sixteen elements a thread, without
// CUDA headers (NVRTC compiles this as it is): values travel as raw bits and convert with PTX,
// in hardware on cards with 8-bit float units (compute capability 8.9 and up).

typedef unsigned short half_bits;

__device__ __forceinline__ float half_to_float(half_bits h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// One e4m3 value (the low byte of `b`) as f16 bits. Placed into f16's sign, exponent and mantissa
// fields as they are, the value comes out 2^-8 of e4m3's (whose exponent's bias is 8 lower), so
// multiplying by 256 gives it exactly, normal and subnormal alike; e4m3's only non-finite value,
// NaN (S.1111.111), stays NaN.
__device__ __forceinline__ unsigned int e4m3_to_half(unsigned int b) {
    const unsigned int sign = (b & 0x80u) << 8;
    if ((b & 0x7Fu) == 0x7Fu) return sign | 0x7E00u;
    const half_bits placed = (half_bits)(sign | ((b & 0x7Fu) << 7));
    const float value = half_to_float(placed) * 256.0f;
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(value));
    return h;
}

// Two e4m3 values (the low and the high byte of `pair`) as two f16 values, low to low.
__device__ __forceinline__ unsigned int e4m3x2_to_half2(unsigned short pair) {
#if __CUDA_ARCH__ >= 890
    unsigned int halves;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(halves) : "h"(pair));
    return halves;
#else
    return e4m3_to_half(pair & 0xFFu) | (e4m3_to_half(pair >> 8) << 16);
#endif
}

// Where the tensors a launch widens lie: up to WIDEN_RANGES, each read from `source` (e4m3) and
// written to `target` (the wide dtype), `elements` long; `first_chunk` counts the launch's
// chunks of sixteen elements before each (one more entry: the launch's total).
#define WIDEN_RANGES 96
struct Ranges {
    unsigned long long source[WIDEN_RANGES];
    unsigned long long target[WIDEN_RANGES];
    unsigned int elements[WIDEN_RANGES];
    unsigned int first_chunk[WIDEN_RANGES + 1];
    unsigned int count;
};

// Sixteen e4m3 values from `source`: one 16-byte load where aligned and whole, else byte by byte
// (missing ones read as zero).
__device__ __forceinline__ uint4 load16(const unsigned char* source, unsigned int n) {
    if (n == 16 && ((unsigned long long)source & 15) == 0) return *reinterpret_cast<const uint4*>(source);
    unsigned int words[4] = {0, 0, 0, 0};
    #pragma unroll
    for (int i = 0; i < 16; ++i) if (i < (int)n) words[i / 4] |= (unsigned int)source[i] << (8 * (i % 4));
    return make_uint4(words[0], words[1], words[2], words[3]);
}

// The chunk's sixteen values as f16 bits, in eight pairs.
__device__ __forceinline__ void widen16(uint4 bytes, unsigned int* halves) {
    const unsigned int words[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
    #pragma unroll
    for (int i = 0; i < 8; ++i) halves[i] = e4m3x2_to_half2((unsigned short)(words[i / 2] >> (16 * (i % 2))));
}

// Value `i` of a chunk given as f16 pairs.
__device__ __forceinline__ half_bits half_at(const unsigned int* halves, int i) {
    return (half_bits)(halves[i / 2] >> (16 * (i % 2)));
}

// bf16 bits of an f16 value from e4m3: every e4m3 value is a bf16 value, so the f32's high half
// is exact.
__device__ __forceinline__ unsigned int half_to_bf16(half_bits h) {
    unsigned int bits;
    asm("mov.b32 %0, %1;" : "=r"(bits) : "f"(half_to_float(h)));
    return bits >> 16;
}

// Writes the chunk's `n` values, given as f16 pairs, to `target` in the output dtype: whole
// chunks in 16-byte stores (targets are aligned to 256 bytes plus whole chunks), the last one
// of a range value by value. Loops are unrolled so the values stay in registers.
template <typename Out>
__device__ __forceinline__ void store16(Out* target, const unsigned int* halves, unsigned int n);

template <>
__device__ __forceinline__ void store16(half_bits* target, const unsigned int* halves, unsigned int n) {
    if (n == 16) {
        uint4* out = reinterpret_cast<uint4*>(target);
        out[0] = make_uint4(halves[0], halves[1], halves[2], halves[3]);
        out[1] = make_uint4(halves[4], halves[5], halves[6], halves[7]);
        return;
    }
    #pragma unroll
    for (int i = 0; i < 16; ++i) if (i < (int)n) target[i] = half_at(halves, i);
}

template <>
__device__ __forceinline__ void store16(float* target, const unsigned int* halves, unsigned int n) {
    float values[16];
    #pragma unroll
    for (int i = 0; i < 16; ++i) values[i] = half_to_float(half_at(halves, i));
    if (n == 16) {
        float4* out = reinterpret_cast<float4*>(target);
        #pragma unroll
        for (int i = 0; i < 4; ++i) out[i] = make_float4(values[4 * i], values[4 * i + 1], values[4 * i + 2], values[4 * i + 3]);
        return;
    }
    #pragma unroll
    for (int i = 0; i < 16; ++i) if (i < (int)n) target[i] = values[i];
}

typedef struct { unsigned short bits; } bf16_bits;
template <>
__device__ __forceinline__ void store16(bf16_bits* target, const unsigned int* halves, unsigned int n) {
    unsigned int pairs[8];
    #pragma unroll
    for (int i = 0; i < 8; ++i) pairs[i] = half_to_bf16(half_at(halves, 2 * i)) | (half_to_bf16(half_at(halves, 2 * i + 1)) << 16);
    if (n == 16) {
        uint4* out = reinterpret_cast<uint4*>(target);
        out[0] = make_uint4(pairs[0], pairs[1], pairs[2], pairs[3]);
        out[1] = make_uint4(pairs[4], pairs[5], pairs[6], pairs[7]);
        return;
    }
    #pragma unroll
    for (int i = 0; i < 16; ++i) if (i < (int)n) target[i].bits = (unsigned short)(pairs[i / 2] >> (16 * (i % 2)));
}

// Widens every range of `ranges`, a thread per chunk of sixteen elements.
template <typename Out>
__device__ void widen(const Ranges& ranges) {
    const unsigned int chunks = ranges.first_chunk[ranges.count];
    for (unsigned int chunk = blockIdx.x * blockDim.x + threadIdx.x; chunk < chunks; chunk += blockDim.x * gridDim.x) {
        unsigned int low = 0, high = ranges.count - 1;
        while (low < high) {
            const unsigned int middle = (low + high + 1) / 2;
            if (ranges.first_chunk[middle] <= chunk) low = middle; else high = middle - 1;
        }
        const unsigned int start = (chunk - ranges.first_chunk[low]) * 16;
        const unsigned int left = ranges.elements[low] - start, n = left < 16 ? left : 16;
        unsigned int halves[8];
        widen16(load16(reinterpret_cast<const unsigned char*>(ranges.source[low]) + start, n), halves);
        store16(reinterpret_cast<Out*>(ranges.target[low]) + start, halves, n);
    }
}

extern "C" __global__ void widen_e4m3_f16(const Ranges ranges) { widen<half_bits>(ranges); }
extern "C" __global__ void widen_e4m3_bf16(const Ranges ranges) { widen<bf16_bits>(ranges); }
extern "C" __global__ void widen_e4m3_f32(const Ranges ranges) { widen<float>(ranges); }

// Rounds `n` f16 values to e4m3 (to nearest, ties to even; beyond ±448 clamped to ±448), sixteen
// a thread: 32 bytes read, 16 written. Both pointers are 16-byte aligned. Only on cards with
// 8-bit float units, the cards that take products in 8 bits.
extern "C" __global__ void round_f16_e4m3(const half_bits* input, unsigned char* output, unsigned long long n) {
#if __CUDA_ARCH__ >= 890
    const unsigned long long chunks = (n + 15) / 16;
    for (unsigned long long chunk = blockIdx.x * blockDim.x + threadIdx.x; chunk < chunks;
         chunk += (unsigned long long)blockDim.x * gridDim.x) {
        const unsigned long long start = chunk * 16;
        unsigned int halves[8];
        if (start + 16 <= n) {
            const uint4* in = reinterpret_cast<const uint4*>(input + start);
            const uint4 a = in[0], b = in[1];
            halves[0] = a.x; halves[1] = a.y; halves[2] = a.z; halves[3] = a.w;
            halves[4] = b.x; halves[5] = b.y; halves[6] = b.z; halves[7] = b.w;
        } else {
            #pragma unroll
            for (int i = 0; i < 8; ++i) {
                const unsigned long long at = start + 2 * i;
                const unsigned int low = at < n ? input[at] : 0, high = at + 1 < n ? input[at + 1] : 0;
                halves[i] = low | (high << 16);
            }
        }
        unsigned int words[4] = {0, 0, 0, 0};
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            unsigned short pair;
            asm("cvt.rn.satfinite.e4m3x2.f16x2 %0, %1;" : "=h"(pair) : "r"(halves[i]));
            words[i / 2] |= (unsigned int)pair << (16 * (i % 2));
        }
        if (start + 16 <= n) {
            *reinterpret_cast<uint4*>(output + start) = make_uint4(words[0], words[1], words[2], words[3]);
        } else {
            #pragma unroll
            for (int i = 0; i < 16; ++i) {
                if (start + i < n) output[start + i] = (unsigned char)(words[i / 4] >> (8 * (i % 4)));
            }
        }
    }
#endif
}
