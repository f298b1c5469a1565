/*
 * vocab.h - the tokenizer metadata of a converted model (vocab.c):
 * tokenizer.ggml.* keys as llama.cpp's byte-level BPE ("gpt2") reader
 * expects them.
 */
#ifndef TOME_TOOLS_CONVERT_VOCAB_H
#define TOME_TOOLS_CONVERT_VOCAB_H

#include "common/common.h"
#include "engine/v4.h"
#include "tools/convert/meta.h"

/* Write tokenizer.ggml.{model, pre, tokens, token_type, merges,
 * bos_token_id, eos_token_id} for the checkpoint in `dir` (config `c`).
 * The vocabulary is DIR/tokenizer.json's (model.vocab, added_tokens,
 * model.merges) when that file exists; without it, a stand-in (the config's
 * BOS and EOS as control tokens, the 256 byte tokens, no merges), so that a
 * model with no tokenizer, such as tome-mkmodel's, still loads.  Either way
 * there is one token per id below c->vocab_size; an id the file leaves out
 * is written as "[PADn]" of type unused.  Returns 0, or TOME_EFORMAT (a
 * malformed tokenizer.json, or an id beyond the vocabulary), TOME_EIO or
 * TOME_ENOMEM with the message in *err. */
int cv_vocab(cv_meta *m, const char *dir, const v4_config *c, tome_error *err);

#endif
