/* The whole decode step of a Llama-family or Gemma 3 model for a few sequences on the CPU, fp32 activations, in one call
   (temper/engine/cpu_decode.py fills the structs below and calls `decode_forward`; cpu_paged.py builds this file
   into the same library as cpu_kernels.c, whose `paged_decode_f32` attends).

   Why: at batch 1 a PyTorch decode step of SmolLM2 is ~900 small operators (30 layers), and MKL's fp32
   matrix-vector product streams weights at ~12 GB/s on a 2-core EPYC whose read bandwidth is 27-31 GB/s. Here each
   weight row is read once for all the step's sequences (it stays in L1 while they use it), rows are shared among
   OpenMP threads, and nothing returns to Python until the logits are done.

   Weights: fp32 (N, K) rows; int4 in blocks of 32 inputs, two blocks to 32 bytes (see q4_pairs; w = code * scale
   + min per group of G inputs, G a multiple of 32), dotted
   with activations quantized to int8 per block of 32 (llama.cpp's Q4_1 x Q8_1 scheme); int8 (N, K) with a scale
   per row, dotted with the fp32 activations. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define TEMPER_AVX2 1
#endif

int paged_decode_f32(const float *q, int64_t q_sh, int64_t q_sn, const float *k_pool, const float *v_pool,
                     int64_t pool_sh, float *out, int64_t o_sh, int64_t o_sn, const int32_t *rows,
                     const int32_t *tables, int64_t table_w, const int32_t *ctx_lens, int num_seqs, int num_heads,
                     int num_kv_heads, int head_dim, int block_size, float scale, float softcap, int window);

enum { LIN_F32 = 0, LIN_Q4 = 1, LIN_I8 = 2 };

typedef struct {
    int32_t kind, out_features, in_features, group_size;
    const float *w;     /* F32: (N, K) */
    const uint8_t *q;   /* Q4: (N, ceil(K / 64), 32) nibbles; I8: (N, K) int8 codes */
    const float *scale; /* Q4: (N, K / G); I8: (N) */
    const float *min;   /* Q4: (N, K / G) */
    const float *bias;  /* (N) or NULL */
} Linear;

typedef struct {
    const float *attn_norm, *ffn_norm;
    Linear q, k, v, o, gate, up, down;
    float *k_pool, *v_pool; /* (Hkv, slots, D) */
    int32_t window;         /* 0: full attention */
    int32_t local_rope;     /* rotate with the local (sliding-window) frequencies */
    /* Gemma 3 only (NULL for Llama): per-head q/k norms, norms after attention and after the MLP */
    const float *q_norm, *k_norm, *post_attn_norm, *post_ffn_norm;
} Layer;

typedef struct {
    int32_t num_layers, hidden, num_heads, num_kv_heads, head_dim, intermediate, vocab, block_size;
    int64_t pool_head_stride;
    float eps, attn_scale;
    const float *final_norm;
    Linear head;
    const Layer *layers;
    float norm_offset;               /* RMSNorm scales by (norm_offset + weight): 0 Llama, 1 Gemma */
    float attn_softcap, final_softcap; /* 0: none */
    int32_t gelu;                    /* GeGLU (tanh-approximated gelu) instead of SwiGLU */
} Model;

/* ---------------------------------------------------------------------------------------------- dot products */
static inline float dot_f32(const float *restrict w, const float *restrict x, int K) {
    int k = 0;
    float s = 0.0f;
#ifdef TEMPER_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (; k + 32 <= K; k += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 16), _mm256_loadu_ps(x + k + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
    __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    s = _mm_cvtss_f32(h);
#endif
    for (; k < K; k++) s += w[k] * x[k];
    return s;
}

static inline float dot_i8(const int8_t *restrict w, const float *restrict x, int K) {
    int k = 0;
    float s = 0.0f;
#ifdef TEMPER_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; k + 16 <= K; k += 16) {
        __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + k))));
        __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + k + 8))));
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + k), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + k + 8), a1);
    }
    __m256 a = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    s = _mm_cvtss_f32(h);
#endif
    for (; k < K; k++) s += (float)w[k] * x[k];
    return s;
}

/* activations quantized for int4 rows: per block of 32 an int8 vector and its scale, per group the exact sum */
typedef struct {
    int8_t *q;   /* (B, K) */
    float *d;    /* (B, K / 32) */
    float *sums; /* (B, K / G) */
} QuantX;

static void quantize_x(const float *x, int B, int K, int G, QuantX *out) {
    const int nb = K / 32, ng = K / G;
    for (int b = 0; b < B; b++) {
        const float *xb = x + (int64_t)b * K;
        for (int j = 0; j < nb; j++) {
            const float *v = xb + j * 32;
            float amax = 0.0f;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
            const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
            out->d[b * nb + j] = d;
            int8_t *q = out->q + (int64_t)b * K + j * 32;
            for (int i = 0; i < 32; i++) q[i] = (int8_t)lrintf(v[i] * inv);
        }
        for (int g = 0; g < ng; g++) {
            float s = 0.0f;
            for (int i = 0; i < G; i++) s += xb[g * G + i];
            out->sums[b * ng + g] = s;
        }
    }
}

/* int4 rows come in pairs of blocks: 32 bytes hold blocks 2p (low nibbles: input i of the block in byte i) and
   2p + 1 (high nibbles; zero when K / 32 is odd and 2p is the last block), so one load and three operations give
   64 codes. Row n has ceil(K / 64) pairs. */
static inline int q4_pairs(int K) { return (K / 32 + 1) / 2; }

/* sum over the row's blocks of (code . xq) * xd[j] * scale[group], plus sum over groups of min * (sum of x) */
static inline float dot_q4(const uint8_t *restrict q, const float *restrict scale, const float *restrict mins,
                           const int8_t *restrict xq, const float *restrict xd, const float *restrict xsum, int K,
                           int G) {
    const int nb = K / 32, ng = K / G;
    float total = 0.0f, min_part = 0.0f;
    for (int j = 0; j < nb; j++) {
        const uint8_t *bytes = q + (j / 2) * 32;
        const int shift = 4 * (j % 2);
        int32_t s = 0;
        for (int i = 0; i < 32; i++) s += ((bytes[i] >> shift) & 0x0F) * xq[j * 32 + i];
        total += (float)s * xd[j] * scale[j * 32 / G];
    }
    for (int g = 0; g < ng; g++) min_part += mins[g] * xsum[g];
    return total + min_part;
}

#ifdef TEMPER_AVX2
static inline float hsum(__m256 a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* dot_q4 for four rows at once (row r at q + r * q_stride, its scales and mins at + r * s_stride): each pair of
   activation blocks is loaded once for the four rows, and their four accumulator chains run side by side */
static inline void dot_q4_x4(const uint8_t *restrict q, int64_t q_stride, const float *restrict scale,
                             const float *restrict mins, int64_t s_stride, const int8_t *restrict xq,
                             const float *restrict xd, const float *restrict xsum, int K, int G, float *out) {
    const int nb = K / 32, ng = K / G, pairs = q4_pairs(K);
    const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0F);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int p = 0; p < pairs; p++) {
        const int j0 = 2 * p, j1 = 2 * p + 1, has1 = j1 < nb;
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(xq + j0 * 32));
        const __m256i x1 = has1 ? _mm256_loadu_si256((const __m256i *)(xq + j1 * 32)) : _mm256_setzero_si256();
        const float d0 = xd[j0], d1 = has1 ? xd[j1] : 0.0f;
        const int g0 = j0 * 32 / G, g1 = has1 ? j1 * 32 / G : g0;
        for (int r = 0; r < 4; r++) {
            const __m256i bytes = _mm256_loadu_si256((const __m256i *)(q + r * q_stride + p * 32));
            const __m256i c0 = _mm256_and_si256(bytes, low), c1 = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
            const __m256 p0 = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(c0, x0), ones));
            const __m256 p1 = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(c1, x1), ones));
            acc[r] = _mm256_fmadd_ps(p0, _mm256_set1_ps(scale[r * s_stride + g0] * d0), acc[r]);
            acc[r] = _mm256_fmadd_ps(p1, _mm256_set1_ps(scale[r * s_stride + g1] * d1), acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) out[r] = hsum(acc[r]) + dot_f32(mins + r * s_stride, xsum, ng);
}
#endif

/* y (B, N) = x (B, K) W^T (+ bias), row b of y at y + b * ldy; rows of W shared among threads, each read once for
   all B inputs */
static int linear(const Linear *L, int B, const float *x, float *y, int64_t ldy) {
    const int N = L->out_features, K = L->in_features;
    if (L->kind == LIN_Q4) {
        const int G = L->group_size, nb = K / 32, ng = K / G;
        QuantX qx = {malloc((size_t)B * K), malloc(sizeof(float) * (size_t)B * nb), malloc(sizeof(float) * (size_t)B * ng)};
        if (qx.q == NULL || qx.d == NULL || qx.sums == NULL) {
            free(qx.q), free(qx.d), free(qx.sums);
            return -1;
        }
        quantize_x(x, B, K, G, &qx);
        const int quads = N / 4;
#pragma omp parallel for schedule(static)
        for (int i = 0; i < quads + N % 4; i++) {
            const int n = i < quads ? 4 * i : 4 * quads + (i - quads), rows = i < quads ? 4 : 1;
            const int64_t row_bytes = (int64_t)q4_pairs(K) * 32;
            const uint8_t *row = L->q + n * row_bytes;
            for (int b = 0; b < B; b++) {
                float v[4];
#ifdef TEMPER_AVX2
                if (rows == 4)
                    dot_q4_x4(row, row_bytes, L->scale + (int64_t)n * ng, L->min + (int64_t)n * ng, ng,
                              qx.q + (int64_t)b * K, qx.d + b * nb, qx.sums + b * ng, K, G, v);
                else
#endif
                    for (int r = 0; r < rows; r++)
                        v[r] = dot_q4(row + r * row_bytes, L->scale + (int64_t)(n + r) * ng,
                                      L->min + (int64_t)(n + r) * ng, qx.q + (int64_t)b * K, qx.d + b * nb,
                                      qx.sums + b * ng, K, G);
                for (int r = 0; r < rows; r++) y[b * ldy + n + r] = L->bias ? v[r] + L->bias[n + r] : v[r];
            }
        }
        free(qx.q), free(qx.d), free(qx.sums);
        return 0;
    }
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        for (int b = 0; b < B; b++) {
            float v = L->kind == LIN_F32 ? dot_f32(L->w + (int64_t)n * K, x + (int64_t)b * K, K)
                                         : dot_i8((const int8_t *)L->q + (int64_t)n * K, x + (int64_t)b * K, K) * L->scale[n];
            y[b * ldy + n] = L->bias ? v + L->bias[n] : v;
        }
    }
    return 0;
}

/* out may be x */
static void rmsnorm(const float *x, const float *w, float offset, float eps, int B, int d, float *out) {
    for (int b = 0; b < B; b++) {
        const float *xb = x + (int64_t)b * d;
        float ss = 0.0f;
        for (int i = 0; i < d; i++) ss += xb[i] * xb[i];
        const float r = 1.0f / sqrtf(ss / d + eps);
        for (int i = 0; i < d; i++) out[(int64_t)b * d + i] = (offset + w[i]) * (xb[i] * r);
    }
}

/* rotate heads (half-split convention) with cos/sin (D) of the token's position */
static void rope(float *x, int heads, int D, const float *cos, const float *sin) {
    const int half = D / 2;
    for (int h = 0; h < heads; h++) {
        float *v = x + h * D;
        for (int i = 0; i < half; i++) {
            const float a = v[i], c = v[i + half];
            v[i] = a * cos[i] - c * sin[i];
            v[i + half] = c * cos[i + half] + a * sin[i + half];
        }
    }
}

/* One decode step for B sequences: h (B, d) holds the new tokens' embeddings (overwritten); cos/sin (B, D) their
   rotations; slots[b] the KV slot each new token is written to; tables (B, table_w), ctx_lens[b] (keys the new
   token sees, itself included). Writes logits (B, V). Returns 0, or -1 when memory ran out. */
int decode_forward(const Model *m, int B, float *h, const float *cos_global, const float *sin_global,
                   const float *cos_local, const float *sin_local, const int64_t *slots, const int32_t *tables,
                   int64_t table_w, const int32_t *ctx_lens, float *logits) {
    const int d = m->hidden, H = m->num_heads, Hkv = m->num_kv_heads, D = m->head_dim, I = m->intermediate;
    const int nq = H * D, nkv = Hkv * D, nqkv = nq + 2 * nkv;
    float *x = malloc(sizeof(float) * (size_t)B * d);
    float *qkv = malloc(sizeof(float) * (size_t)B * nqkv);
    float *attn = malloc(sizeof(float) * (size_t)B * nq);
    float *gu = malloc(sizeof(float) * (size_t)B * 2 * I);
    float *act = malloc(sizeof(float) * (size_t)B * I);
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)B);
    int status = x && qkv && attn && gu && act && rows ? 0 : -1;
    for (int b = 0; b < B && status == 0; b++) rows[b] = b;
    for (int l = 0; l < m->num_layers && status == 0; l++) {
        const Layer *L = m->layers + l;
        rmsnorm(h, L->attn_norm, m->norm_offset, m->eps, B, d, x);
        if ((status = linear(&L->q, B, x, qkv, nqkv)) != 0 || (status = linear(&L->k, B, x, qkv + nq, nqkv)) != 0 ||
            (status = linear(&L->v, B, x, qkv + nq + nkv, nqkv)) != 0)
            break;
        const float *cos = L->local_rope ? cos_local : cos_global, *sin = L->local_rope ? sin_local : sin_global;
        for (int b = 0; b < B; b++) {
            float *qb = qkv + (int64_t)b * nqkv, *kb = qb + nq, *vb = kb + nkv;
            if (L->q_norm != NULL) {
                rmsnorm(qb, L->q_norm, m->norm_offset, m->eps, H, D, qb);
                rmsnorm(kb, L->k_norm, m->norm_offset, m->eps, Hkv, D, kb);
            }
            rope(qb, H, D, cos + (int64_t)b * D, sin + (int64_t)b * D);
            rope(kb, Hkv, D, cos + (int64_t)b * D, sin + (int64_t)b * D);
            for (int hh = 0; hh < Hkv; hh++) {
                memcpy(L->k_pool + hh * m->pool_head_stride + slots[b] * D, kb + hh * D, sizeof(float) * D);
                memcpy(L->v_pool + hh * m->pool_head_stride + slots[b] * D, vb + hh * D, sizeof(float) * D);
            }
        }
        status = paged_decode_f32(qkv, D, nqkv, L->k_pool, L->v_pool, m->pool_head_stride, attn, D, nq, rows, tables,
                                  table_w, ctx_lens, B, H, Hkv, D, m->block_size, m->attn_scale, m->attn_softcap, L->window);
        if (status != 0 || (status = linear(&L->o, B, attn, x, d)) != 0) break;
        if (L->post_attn_norm != NULL) rmsnorm(x, L->post_attn_norm, m->norm_offset, m->eps, B, d, x);
        for (int64_t i = 0; i < (int64_t)B * d; i++) h[i] += x[i];
        rmsnorm(h, L->ffn_norm, m->norm_offset, m->eps, B, d, x);
        if ((status = linear(&L->gate, B, x, gu, 2 * I)) != 0 || (status = linear(&L->up, B, x, gu + I, 2 * I)) != 0)
            break;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < I; i++) {
                const float g = gu[(int64_t)b * 2 * I + i], u = gu[(int64_t)b * 2 * I + I + i];
                const float a = m->gelu ? 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g)))
                                        : g / (1.0f + expf(-g));
                act[(int64_t)b * I + i] = a * u;
            }
        if ((status = linear(&L->down, B, act, x, d)) != 0) break;
        if (L->post_ffn_norm != NULL) rmsnorm(x, L->post_ffn_norm, m->norm_offset, m->eps, B, d, x);
        for (int64_t i = 0; i < (int64_t)B * d; i++) h[i] += x[i];
    }
    if (status == 0) {
        rmsnorm(h, m->final_norm, m->norm_offset, m->eps, B, d, x);
        status = linear(&m->head, B, x, logits, m->vocab);
        if (status == 0 && m->final_softcap > 0.0f)
            for (int64_t i = 0; i < (int64_t)B * m->vocab; i++)
                logits[i] = tanhf(logits[i] / m->final_softcap) * m->final_softcap;
    }
    free(x), free(qkv), free(attn), free(gu), free(act), free(rows);
    return status;
}

/* one linear layer on its own (tests check the int4 and int8 dot products against fp32 math through this) */
int linear_forward(const Linear *L, int B, const float *x, float *y) { return linear(L, B, x, y, L->out_features); }
