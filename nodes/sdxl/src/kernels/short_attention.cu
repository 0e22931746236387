// Attention over a few keys (IP-Adapter's image tokens, InstantID's face tokens), alone or added
// to another attention's output in the same pass: out = base + scale * softmax(q k^T / 8) v per
// 64-wide head (no `base` when it is null), f16 in and out with f32 arithmetic. Eight lanes take one (query token, head), each lane eight of its 64 channels: a
// score is summed across the eight lanes, the softmax is computed online as the keys go by, and
// the keys and values (a few kilobytes) are read through the cache. Tensors are packed
// `[batch, tokens, heads * 64]`.

// Groups of eight lanes in a warp.
#define GROUPS_PER_WARP 4

extern "C" __global__ void short_attention_f16(
    const half_bits* __restrict__ base, const half_bits* __restrict__ q,
    const half_bits* __restrict__ k, const half_bits* __restrict__ v,
    half_bits* __restrict__ out, int batch, int queries, int keys, int heads, float scale) {
    const long long groups = (long long)batch * queries * heads;
    const long long width = (long long)heads * 64;
    const int lane = threadIdx.x & 7;
    const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    // Every lane of a warp runs every iteration (the shuffles need the whole warp); a group past
    // the end computes on the last group's data and stores nothing.
    for (long long first = warp * GROUPS_PER_WARP; first < groups; first += warps * GROUPS_PER_WARP) {
        const long long wanted = first + ((threadIdx.x & 31) >> 3);
        const long long group = wanted < groups ? wanted : groups - 1;
        const int head = (int)(group % heads);
        const long long token = group / heads;
        const long long sample = token / queries;
        const long long at = token * width + head * 64 + lane * 8;
        const long long key_start = sample * keys * width + head * 64 + lane * 8;
        float query[8], sum[8];
        load8(q + at, query);
        #pragma unroll
        for (int i = 0; i < 8; ++i) sum[i] = 0.f;
        float largest = -__int_as_float(0x7f800000), total = 0.f;
        for (int j = 0; j < keys; ++j) {
            float key[8], value[8];
            load8(k + key_start + j * width, key);
            float score = 0.f;
            #pragma unroll
            for (int i = 0; i < 8; ++i) score += query[i] * key[i];
            score += __shfl_xor_sync(0xffffffffu, score, 1);
            score += __shfl_xor_sync(0xffffffffu, score, 2);
            score += __shfl_xor_sync(0xffffffffu, score, 4);
            score *= 0.125f;
            const float new_largest = fmaxf(largest, score);
            const float kept = __expf(largest - new_largest);
            const float weight = __expf(score - new_largest);
            load8(v + key_start + j * width, value);
            #pragma unroll
            for (int i = 0; i < 8; ++i) sum[i] = sum[i] * kept + weight * value[i];
            total = total * kept + weight;
            largest = new_largest;
        }
        if (wanted < groups) {
            float result[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
            if (base) load8(base + at, result);
            const float factor = scale / total;
            #pragma unroll
            for (int i = 0; i < 8; ++i) result[i] += factor * sum[i];
            store8(out + at, result);
        }
    }
}
