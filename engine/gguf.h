/*
 * gguf.h - private to engine/: reading a GGUF file (gguf.c) and opening it
 * as a V4 checkpoint (gguf_model.c).
 *
 * A GGUF file is a header (magic "GGUF", version 2 or 3, tensor and
 * metadata counts), typed metadata key/values, tensor infos (name, dims,
 * ggml type, offset), padding to the alignment (general.alignment,
 * default 32) and the tensor data.  v4_gguf_parse reads a mapped file
 * into the structure below without copying tensor data, and checks every
 * length, count, type and offset against the bytes that are there: a
 * damaged or hostile file gets an error naming what is wrong, never a read
 * out of bounds.  Little-endian files only (big-endian GGUFs are refused
 * by their version word).
 */
#ifndef TOME_ENGINE_GGUF_H
#define TOME_ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "engine/checkpoint.h"

/* Metadata value types, as the file numbers them. */
enum {
    V4_GGUF_U8 = 0,
    V4_GGUF_I8 = 1,
    V4_GGUF_U16 = 2,
    V4_GGUF_I16 = 3,
    V4_GGUF_U32 = 4,
    V4_GGUF_I32 = 5,
    V4_GGUF_F32 = 6,
    V4_GGUF_BOOL = 7,
    V4_GGUF_STRING = 8,
    V4_GGUF_ARRAY = 9,
    V4_GGUF_U64 = 10,
    V4_GGUF_I64 = 11,
    V4_GGUF_F64 = 12
};

typedef struct v4_gguf_kv {
    char *key;
    uint32_t type;       /* V4_GGUF_*; for arrays, ARRAY */
    uint32_t elem_type;  /* arrays: the elements' type (never ARRAY) */
    uint64_t count;      /* arrays: elements; strings: bytes */
    const uint8_t *data; /* the value (strings: the bytes, not terminated;
                            arrays: the first element) */
} v4_gguf_kv;

typedef struct v4_gguf_tensor {
    char *name;
    uint32_t ggml_type;
    v4_dtype dtype; /* the engine's name for ggml_type */
    int ndim;
    int64_t ne[4]; /* ggml order: ne[0] is the row (fastest) */
    uint64_t offset;
    const uint8_t *data;
    size_t nbytes;
} v4_gguf_tensor;

typedef struct v4_gguf {
    const char *path; /* for messages (not owned) */
    const uint8_t *map;
    size_t size;
    uint32_t version, alignment;
    v4_gguf_kv *kv;
    size_t n_kv;
    v4_gguf_tensor *tensors;
    size_t n_tensors;
    size_t header_bytes; /* header, metadata and tensor infos */
    size_t data_start;
    json_t *by_name; /* tensor name -> position in tensors[] */
} v4_gguf;

/* Parse `size` bytes at `map` (kept, not copied).  `path` names the file in
 * errors and must outlive the result. */
int v4_gguf_parse(const uint8_t *map, size_t size, const char *path, v4_gguf **out,
                  tome_error *err);
void v4_gguf_free(v4_gguf *g);

/* The value of a key, or NULL. */
const v4_gguf_kv *v4_gguf_find(const v4_gguf *g, const char *key);
/* An integer value (any integer type, or BOOL) / a float value (F32, F64
 * or an integer), as double; element i of an array of those.  Return 0,
 * or TOME_EFORMAT (message names the key) if the type does not fit. */
int v4_gguf_number(const v4_gguf *g, const v4_gguf_kv *kv, uint64_t i, double *out,
                   tome_error *err);
/* The tensor of that name, or NULL. */
const v4_gguf_tensor *v4_gguf_tensor_find(const v4_gguf *g, const char *name);

/* ggml's name of a type number ("Q4_K", "IQ3_S", "type 77"), for messages;
 * and the engine's dtype of a type it reads (TOME_ENOTFOUND otherwise). */
const char *v4_gguf_type_name(uint32_t ggml_type, char *buf, size_t cap);
int v4_gguf_dtype(uint32_t ggml_type, v4_dtype *out);
/* The ggml type number of an engine dtype that GGUF can hold (-1 if none). */
int v4_gguf_type_of(v4_dtype t);

/* ---- as a V4 checkpoint (gguf_model.c) ---------------------------------- */

/* Whether `path` names a GGUF file (a regular file beginning "GGUF"). */
int v4_gguf_is_file(const char *path);
/* Map a GGUF file, read V4's config from its metadata (the mapping is in
 * gguf_model.c), and present its tensors under the manifest's names:
 * every tensor the config implies is present with a type the engine reads
 * and the shape the manifest gives (stacked experts split per expert),
 * none is left over.  ck->gguf keeps the parsed file.  `mtp_path`, when
 * not NULL, is a separate GGUF holding the MTP block (ds4 publishes one,
 * with "mtp.0." names): the model file must have none, and its
 * compress_ratios must list the MTP block's; ck->gguf_mtp keeps it. */
int v4_gguf_checkpoint(const char *path, const char *mtp_path, v4_config *cfg, v4_checkpoint **ck,
                       tome_error *err);
/* The GGUF name of manifest tensor `hf` (variant 0: llama.cpp's names;
 * 1: ds4's "mtp.K." names for the MTP block); *expert gets the expert index
 * for a routed expert (whose GGUF tensor stacks all experts), else -1.
 * Returns 0, or TOME_ENOTFOUND for a name with no GGUF counterpart (the
 * FP8/FP4 ".scale" tensors). */
int v4_gguf_name(const v4_config *c, const char *hf, int variant, char *out, size_t cap,
                 int *expert);
/* The file's own vocabulary (tokenizer.ggml.*) as the Hugging Face
 * tokenizer.json document it stands for (gguf_vocab.c): byte-level BPE
 * with DeepSeek's pre-tokenizer ("deepseek-v3"); any other kind is refused
 * by name.  *json is NUL-terminated, *len its length; free() it. */
int v4_gguf_vocab_json(const v4_gguf *g, char **json, size_t *len, tome_error *err);
/* The same for the GGUF file at `path` (mapped for the call only). */
int v4_gguf_tokenizer_json(const char *path, char **json, size_t *len, tome_error *err);
/* SHA-256 of a GGUF model: a tag of its own, the whole header (metadata and
 * tensor infos), the engine's mode bytes and each tensor's first 64 bytes;
 * then, with a separate MTP file, the same of it. */
void v4_gguf_fingerprint(const v4_checkpoint *ck, const uint8_t *mode, size_t mode_len,
                         uint8_t out[32]);

#endif
