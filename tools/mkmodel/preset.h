/*
 * preset.h - the model shapes tome-mkmodel knows by name (private).
 *
 *   tiny         the built-in demo and test model: every V4 layer kind
 *                (SWA, CSA with its indexer, HCA, hash and score routing,
 *                FP4 experts, an MTP block with a compressor and indexer),
 *                the real 129,280-token vocabulary, hidden size 128.
 *   flash-shape  DeepSeek-V4-Flash's real per-layer dimensions with fewer
 *                layers and experts, for benchmarks.
 *   pro-shape    the same for DeepSeek-V4-Pro.
 */
#ifndef TOME_TOOLS_MKMODEL_PRESET_H
#define TOME_TOOLS_MKMODEL_PRESET_H

#include "common/common.h"

#define MK_FLASH_DEFAULT_LAYERS  2
#define MK_FLASH_DEFAULT_EXPERTS 16

/* The config.json text of a preset, as a malloc'd string the caller frees.
 * `layers` and `experts` (0 = the preset's default) apply to flash-shape
 * and pro-shape only. */
int mk_preset_config(const char *preset, int layers, int experts, char **json, tome_error *err);

#endif
