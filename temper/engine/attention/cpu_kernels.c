/* Paged decode attention for the CPU, fp32 (temper/engine/attention/cpu_paged.py builds and loads this file).

   One work item per (sequence, KV head): the query heads of that KV head's group score every key the sequence's
   new token may see, reading each key and value once, straight from the block pool through the block table.
   Nothing is gathered and no mask is built: the PyTorch path spends most of a large decode step copying keys out
   of the pool before two batched matmuls. Work items are shared among OpenMP threads (PyTorch's own libgomp,
   which is already loaded when this library is, so there is one thread pool). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float dot(const float *restrict a, const float *restrict b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* q and out: (H, N, D) with strides (q_sh, q_sn, 1); pools: (Hkv, slots, D) with stride pool_sh between heads;
   rows[b]: which of the N tokens is sequence b's query; tables: (B, table_w) int32 block ids; ctx_lens[b]: keys the
   query sees including its own (0: write zeros); window > 0: only the last `window` positions; softcap > 0:
   softcap * tanh(score / softcap). Returns 0, or -1 when a scratch buffer could not be allocated. */
int paged_decode_f32(const float *q, int64_t q_sh, int64_t q_sn,
                     const float *k_pool, const float *v_pool, int64_t pool_sh,
                     float *out, int64_t o_sh, int64_t o_sn,
                     const int32_t *rows, const int32_t *tables, int64_t table_w, const int32_t *ctx_lens,
                     int num_seqs, int num_heads, int num_kv_heads, int head_dim, int block_size,
                     float scale, float softcap, int window) {
    const int rep = num_heads / num_kv_heads;
    const int D = head_dim;
    const int items = num_seqs * num_kv_heads;
    int failed = 0;
#pragma omp parallel
    {
        float *scores = NULL;
        int64_t capacity = 0;
        float *acc = malloc(sizeof(float) * (size_t)rep * D);
        if (acc == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < items; item++) {
            if (failed) continue;
            const int b = item / num_kv_heads, kvh = item % num_kv_heads;
            const int ctx = ctx_lens[b];
            const int64_t row = rows[b];
            if (ctx <= 0) {
                for (int r = 0; r < rep; r++)
                    memset(out + (int64_t)(kvh * rep + r) * o_sh + row * o_sn, 0, sizeof(float) * D);
                continue;
            }
            const int lo = window > 0 && ctx > window ? ctx - window : 0;
            const int n = ctx - lo;
            if ((int64_t)rep * n > capacity) {
                free(scores);
                capacity = (int64_t)rep * n * 2;
                scores = malloc(sizeof(float) * (size_t)capacity);
                if (scores == NULL) {
                    capacity = 0;
#pragma omp atomic write
                    failed = 1;
                    continue;
                }
            }
            const float *k_base = k_pool + kvh * pool_sh;
            const float *v_base = v_pool + kvh * pool_sh;
            const int32_t *table = tables + b * table_w;
            const float *qh[rep];
            for (int r = 0; r < rep; r++) qh[r] = q + (int64_t)(kvh * rep + r) * q_sh + row * q_sn;

            /* scores: each key read once for the whole group */
            for (int pos = lo; pos < ctx; pos++) {
                const int64_t slot = (int64_t)table[pos / block_size] * block_size + pos % block_size;
                const float *k = k_base + slot * D;
                for (int r = 0; r < rep; r++) {
                    float s = dot(qh[r], k, D) * scale;
                    if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
                    scores[(int64_t)r * n + (pos - lo)] = s;
                }
            }
            /* softmax per query head */
            for (int r = 0; r < rep; r++) {
                float *s = scores + (int64_t)r * n;
                float m = s[0];
                for (int j = 1; j < n; j++) m = s[j] > m ? s[j] : m;
                float total = 0.0f;
                for (int j = 0; j < n; j++) {
                    s[j] = expf(s[j] - m);
                    total += s[j];
                }
                const float inv = 1.0f / total;
                for (int j = 0; j < n; j++) s[j] *= inv;
            }
            /* weighted sum of values: each value read once for the whole group */
            memset(acc, 0, sizeof(float) * (size_t)rep * D);
            for (int pos = lo; pos < ctx; pos++) {
                const int64_t slot = (int64_t)table[pos / block_size] * block_size + pos % block_size;
                const float *restrict v = v_base + slot * D;
                for (int r = 0; r < rep; r++) {
                    const float p = scores[(int64_t)r * n + (pos - lo)];
                    float *restrict a = acc + r * D;
                    for (int d = 0; d < D; d++) a[d] += p * v[d];
                }
            }
            for (int r = 0; r < rep; r++)
                memcpy(out + (int64_t)(kvh * rep + r) * o_sh + row * o_sn, acc + r * D, sizeof(float) * D);
        }
        free(scores);
        free(acc);
    }
    return failed ? -1 : 0;
}
