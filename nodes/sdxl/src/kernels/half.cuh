// Half-precision helpers for the kernels, without CUDA headers (NVRTC compiles them as they are):
// halves travel as raw 16-bit values and are converted with PTX.

typedef unsigned short half_bits;
typedef unsigned int half2_bits;

__device__ __forceinline__ float half_to_float(half_bits h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ half_bits float_to_half(float f) {
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ half2_bits pack_half2(float low, float high) {
    half2_bits packed;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(high), "f"(low));
    return packed;
}

// Eight halves (16 bytes) at a time: `load8` converts them to floats, `store8` back.
__device__ __forceinline__ void load8(const half_bits* p, float* f) {
    const uint4 bits = *reinterpret_cast<const uint4*>(p);
    const half_bits* h = reinterpret_cast<const half_bits*>(&bits);
    #pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = half_to_float(h[i]);
}

__device__ __forceinline__ void store8(half_bits* p, const float* f) {
    uint4 bits;
    bits.x = pack_half2(f[0], f[1]);
    bits.y = pack_half2(f[2], f[3]);
    bits.z = pack_half2(f[4], f[5]);
    bits.w = pack_half2(f[6], f[7]);
    *reinterpret_cast<uint4*>(p) = bits;
}

// bfloat16 travels as raw 16-bit values too: its bits are the top half of an f32's.
__device__ __forceinline__ float bf16_to_float(half_bits h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

__device__ __forceinline__ half2_bits pack_bf16x2(float low, float high) {
    half2_bits packed;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(high), "f"(low));
    return packed;
}

// The two 16-bit float formats as type parameters of the kernels written for both: `to_float`
// of one value, `pack2` of two.
struct F16 {
    static __device__ __forceinline__ float to_float(half_bits h) { return half_to_float(h); }
    static __device__ __forceinline__ half2_bits pack2(float low, float high) { return pack_half2(low, high); }
};

struct BF16 {
    static __device__ __forceinline__ float to_float(half_bits h) { return bf16_to_float(h); }
    static __device__ __forceinline__ half2_bits pack2(float low, float high) { return pack_bf16x2(low, high); }
};

// `load8` and `store8` for either format.
template <typename T>
__device__ __forceinline__ void load8_as(const half_bits* p, float* f) {
    const uint4 bits = *reinterpret_cast<const uint4*>(p);
    const half_bits* h = reinterpret_cast<const half_bits*>(&bits);
    #pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = T::to_float(h[i]);
}

template <typename T>
__device__ __forceinline__ void store8_as(half_bits* p, const float* f) {
    uint4 bits;
    bits.x = T::pack2(f[0], f[1]);
    bits.y = T::pack2(f[2], f[3]);
    bits.z = T::pack2(f[4], f[5]);
    bits.w = T::pack2(f[6], f[7]);
    *reinterpret_cast<uint4*>(p) = bits;
}
