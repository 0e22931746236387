// Fused attention forward (flash-attention style) for f16 tensors with head dimension 64.
//
// Each block of 4 warps takes 128 query rows of one (batch, head), 32 rows a warp (two tiles of
// 16, so each key and value fragment read from shared memory serves two products), and walks the
// keys in tiles of 64: scores, an online softmax and the weighted sum of values stay in
// registers, so no score matrix ever reaches device memory. Products run on tensor cores
// (mma.sync m16n8k16, f16 inputs, f32 accumulation); the softmax is in f32. Keys and values
// are double-buffered in shared memory: the next tile is copied in (cp.async, straight from
// global memory) while the current one is used, and the products read their fragments with
// ldmatrix, the values transposed as they are read.
//
// Tensors are read and written in token layout, `[batch, tokens, heads * 64]` with the given
// strides (in elements), so no transposes are needed around the kernel. Compiled at run time by
// NVRTC after half.cuh.

#define HEAD_DIM 64
#define WARPS 4
// 16-row tiles of queries a warp takes.
#define M_TILES 2
#define ROWS_PER_WARP (16 * M_TILES)
#define ROWS_PER_BLOCK (WARPS * ROWS_PER_WARP)
#define KEYS_PER_TILE 64
#define THREADS (WARPS * 32)
// Padding that puts the eight rows an ldmatrix reads in eight different groups of banks.
#define PAD 8
#define SMEM_ROW (HEAD_DIM + PAD)
// 16-byte pieces of a tile's keys (or values) each thread copies.
#define PIECES_PER_THREAD (KEYS_PER_TILE * HEAD_DIM / 8 / THREADS)
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ void mma_16x8x16(float* c, const half2_bits* a, half2_bits b0, half2_bits b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ half2_bits load_half2(const half_bits* p) {
    return *reinterpret_cast<const half2_bits*>(p);
}

__device__ __forceinline__ unsigned shared_address(const void* p) {
    unsigned address;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(address) : "l"(p));
    return address;
}

// 16 bytes from global to shared memory without passing through registers; zeros where
// `valid` is false (the source is not read then).
__device__ __forceinline__ void copy16_async(half_bits* target, const half_bits* source, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :: "r"(shared_address(target)), "l"(source), "r"(valid ? 16 : 0) : "memory");
}

__device__ __forceinline__ void commit_copies() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}

// Waits for every committed group of copies but the newest.
__device__ __forceinline__ void wait_for_all_but_newest_copies() {
    asm volatile("cp.async.wait_group 1;" ::: "memory");
}

// Four 8x8 matrices of halves from shared memory (lanes 0-7 address the rows of the first,
// 8-15 of the second, ...): each lane gets row lane/4, columns 2(lane%4) and 2(lane%4)+1 of
// each, the layout of an mma operand fragment.
__device__ __forceinline__ void load_matrices(half2_bits* r, const half_bits* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)) : "memory");
}

// The same, each matrix transposed: each lane gets column lane/4, rows 2(lane%4) and
// 2(lane%4)+1.
__device__ __forceinline__ void load_matrices_transposed(half2_bits* r, const half_bits* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)) : "memory");
}

// Starts copying the tile of keys and values from key `tile` into shared memory; keys past
// `kv_len` are zeros.
__device__ __forceinline__ void copy_tile_async(
    half_bits (*keys)[SMEM_ROW], half_bits (*values)[SMEM_ROW],
    const half_bits* k, const half_bits* v, int tile, int kv_len,
    long long k_row_stride, long long v_row_stride) {
    #pragma unroll
    for (int i = 0; i < PIECES_PER_THREAD; ++i) {
        const int piece = threadIdx.x + i * THREADS;
        const int key = piece / 8;
        const int col = (piece % 8) * 8;
        const bool valid = tile + key < kv_len;
        const long long row = valid ? tile + key : 0;
        copy16_async(&keys[key][col], k + row * k_row_stride + col, valid);
        copy16_async(&values[key][col], v + row * v_row_stride + col, valid);
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) flash_attention_f16_d64(
    const half_bits* __restrict__ q, const half_bits* __restrict__ k, const half_bits* __restrict__ v,
    half_bits* __restrict__ o, int q_len, int kv_len,
    long long q_batch_stride, long long q_row_stride,
    long long k_batch_stride, long long k_row_stride,
    long long v_batch_stride, long long v_row_stride,
    long long o_batch_stride, long long o_row_stride,
    float scale_log2) {
    __shared__ __align__(16) half_bits keys[2][KEYS_PER_TILE][SMEM_ROW];
    __shared__ __align__(16) half_bits values[2][KEYS_PER_TILE][SMEM_ROW];

    const int tid = threadIdx.x;
    const int warp = tid / 32;
    const int lane = tid % 32;
    const int group = lane / 4;    // the row (or column) a thread's fragment covers
    const int in_group = lane % 4; // which pair of columns (or rows)
    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int row0 = blockIdx.x * ROWS_PER_BLOCK + warp * ROWS_PER_WARP;
    // The matrix of an ldmatrix this lane addresses a row of, and which row.
    const int matrix = lane / 8;
    const int matrix_row = lane % 8;

    q += batch * q_batch_stride + head * HEAD_DIM;
    k += batch * k_batch_stride + head * HEAD_DIM;
    v += batch * v_batch_stride + head * HEAD_DIM;
    o += batch * o_batch_stride + head * HEAD_DIM;

    // Rows are indexed [m][h]: tile m of the warp's rows, h = 0 for this lane's row `group` of
    // the tile and h = 1 for row `group + 8`. An accumulator's elements 2h and 2h + 1 belong to
    // row h.
    int rows[M_TILES][2];
    #pragma unroll
    for (int m = 0; m < M_TILES; ++m) {
        rows[m][0] = row0 + m * 16 + group;
        rows[m][1] = rows[m][0] + 8;
    }

    // This warp's query rows as A fragments, one per 16 columns of the head.
    half2_bits q_frag[M_TILES][4][4];
    #pragma unroll
    for (int m = 0; m < M_TILES; ++m) {
        #pragma unroll
        for (int chunk = 0; chunk < 4; ++chunk) {
            const int col = chunk * 16 + in_group * 2;
            #pragma unroll
            for (int h = 0; h < 2; ++h) {
                const bool inside = rows[m][h] < q_len;
                const half_bits* row = q + rows[m][h] * q_row_stride + col;
                q_frag[m][chunk][h] = inside ? load_half2(row) : 0u;
                q_frag[m][chunk][h + 2] = inside ? load_half2(row + 8) : 0u;
            }
        }
    }

    float out[M_TILES][8][4];
    float max_score[M_TILES][2], sum[M_TILES][2];
    #pragma unroll
    for (int m = 0; m < M_TILES; ++m) {
        #pragma unroll
        for (int n = 0; n < 8; ++n) {
            out[m][n][0] = out[m][n][1] = out[m][n][2] = out[m][n][3] = 0.f;
        }
        max_score[m][0] = max_score[m][1] = NEG_INF;
        sum[m][0] = sum[m][1] = 0.f;
    }

    copy_tile_async(keys[0], values[0], k, v, 0, kv_len, k_row_stride, v_row_stride);
    commit_copies();
    int stage = 0;
    for (int tile = 0; tile < kv_len; tile += KEYS_PER_TILE, stage ^= 1) {
        // The next tile's copies start before this one is used; the buffer they fill was last
        // read in the previous iteration, which every warp has left (the barrier at its end).
        if (tile + KEYS_PER_TILE < kv_len) {
            copy_tile_async(keys[stage ^ 1], values[stage ^ 1], k, v, tile + KEYS_PER_TILE, kv_len,
                            k_row_stride, v_row_stride);
        }
        commit_copies();
        wait_for_all_but_newest_copies();
        __syncthreads();

        // Scores for the warp's rows x 64 keys: eight 16x8 accumulators a tile of rows. Each
        // ldmatrix brings the key fragments of two 16-wide slices of the head.
        float score[M_TILES][8][4];
        #pragma unroll
        for (int n = 0; n < 8; ++n) {
            #pragma unroll
            for (int m = 0; m < M_TILES; ++m) {
                score[m][n][0] = score[m][n][1] = score[m][n][2] = score[m][n][3] = 0.f;
            }
            #pragma unroll
            for (int pair = 0; pair < 2; ++pair) {
                half2_bits key_frag[4];
                load_matrices(key_frag, &keys[stage][n * 8 + matrix_row][(2 * pair + matrix / 2) * 16 + (matrix % 2) * 8]);
                #pragma unroll
                for (int m = 0; m < M_TILES; ++m) {
                    mma_16x8x16(score[m][n], q_frag[m][2 * pair], key_frag[0], key_frag[1]);
                    mma_16x8x16(score[m][n], q_frag[m][2 * pair + 1], key_frag[2], key_frag[3]);
                }
            }
        }

        // The online softmax, row by row: scale, mask keys past the end, rescale what was
        // summed under the previous maximum.
        #pragma unroll
        for (int m = 0; m < M_TILES; ++m) {
            #pragma unroll
            for (int h = 0; h < 2; ++h) {
                float tile_max = NEG_INF;
                #pragma unroll
                for (int n = 0; n < 8; ++n) {
                    #pragma unroll
                    for (int j = 0; j < 2; ++j) {
                        const bool valid = tile + n * 8 + in_group * 2 + j < kv_len;
                        float& s = score[m][n][2 * h + j];
                        s = valid ? s * scale_log2 : NEG_INF;
                        tile_max = fmaxf(tile_max, s);
                    }
                }
                #pragma unroll
                for (int offset = 1; offset < 4; offset *= 2) {
                    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
                }
                const float new_max = fmaxf(max_score[m][h], tile_max);
                const float rescale = exp2f(max_score[m][h] - new_max);
                max_score[m][h] = new_max;
                sum[m][h] *= rescale;
                #pragma unroll
                for (int n = 0; n < 8; ++n) {
                    #pragma unroll
                    for (int j = 0; j < 2; ++j) {
                        out[m][n][2 * h + j] *= rescale;
                        float& s = score[m][n][2 * h + j];
                        s = exp2f(s - new_max);
                        sum[m][h] += s;
                    }
                }
            }
        }

        // out += P V: the score accumulators of two adjacent 8-key blocks are exactly the A
        // fragment of a 16-key slice, so P never leaves registers.
        #pragma unroll
        for (int chunk = 0; chunk < 4; ++chunk) {
            half2_bits p[M_TILES][4];
            #pragma unroll
            for (int m = 0; m < M_TILES; ++m) {
                p[m][0] = pack_half2(score[m][2 * chunk][0], score[m][2 * chunk][1]);
                p[m][1] = pack_half2(score[m][2 * chunk][2], score[m][2 * chunk][3]);
                p[m][2] = pack_half2(score[m][2 * chunk + 1][0], score[m][2 * chunk + 1][1]);
                p[m][3] = pack_half2(score[m][2 * chunk + 1][2], score[m][2 * chunk + 1][3]);
            }
            // Each transposed ldmatrix brings the value fragments of two 8-wide slices of the
            // head for this chunk's 16 keys.
            #pragma unroll
            for (int pair = 0; pair < 4; ++pair) {
                half2_bits value_frag[4];
                load_matrices_transposed(value_frag, &values[stage][chunk * 16 + (matrix % 2) * 8 + matrix_row][(2 * pair + matrix / 2) * 8]);
                #pragma unroll
                for (int m = 0; m < M_TILES; ++m) {
                    mma_16x8x16(out[m][2 * pair], p[m], value_frag[0], value_frag[1]);
                    mma_16x8x16(out[m][2 * pair + 1], p[m], value_frag[2], value_frag[3]);
                }
            }
        }
        __syncthreads();
    }

    #pragma unroll
    for (int m = 0; m < M_TILES; ++m) {
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            float total = sum[m][h];
            #pragma unroll
            for (int offset = 1; offset < 4; offset *= 2) total += __shfl_xor_sync(0xffffffffu, total, offset);
            const float inverse = 1.f / total;
            if (rows[m][h] >= q_len) continue;
            #pragma unroll
            for (int n = 0; n < 8; ++n) {
                *reinterpret_cast<half2_bits*>(o + rows[m][h] * o_row_stride + n * 8 + in_group * 2) =
                    pack_half2(out[m][n][2 * h] * inverse, out[m][n][2 * h + 1] * inverse);
            }
        }
    }
}
