#!/usr/bin/env python3
"""Regenerate tests/data/chat-cases.jsonl with the official V4 encoder.

usage: make-chat-cases.py DIR_WITH_encoding_dsv4.py > tests/data/chat-cases.jsonl

encoding_dsv4.py is DeepSeek's reference encoder (encoding/ in the
DeepSeek-V4 model repositories); it is not part of tome.  Each case is a
message list and options; the expected text is what the reference renders.
The cases cover what the four official tests do not: modes, think-max,
keeping reasoning, response formats, reordered tool results, merged user
turns, dropped developer messages, wo_eos, tasks, odd tool arguments.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
from encoding_dsv4 import encode_messages  # noqa: E402

TALK = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "reasoning_content": "Greet.", "content": "Hi!"},
    {"role": "user", "content": "Sum 2+2?"},
    {"role": "assistant", "reasoning_content": "Easy: 4.", "content": "4"},
]
QUESTION = [{"role": "user", "content": "Hi"}]
TOOLS = [{"type": "function", "function": {"name": "calc", "description": "Évalue", "parameters": {
    "type": "object", "properties": {"x": {"type": "number", "default": 0.5, "minimum": 1e-05},
                                     "big": {"type": "number", "default": 1e16}},
    "required": ["x"]}}}]

CASES = [
    ("chat", {}, QUESTION),
    ("thinking", {}, QUESTION),
    ("thinking", {"reasoning_effort": "max"}, QUESTION),
    ("chat", {"reasoning_effort": "max"}, QUESTION),
    ("thinking", {"reasoning_effort": "high"}, TALK[:4]),
    ("thinking", {}, TALK),
    ("thinking", {"drop_thinking": False}, TALK),
    ("chat", {}, TALK),
    ("thinking", {"reasoning_effort": "max"}, TALK),
    ("thinking", {}, [{"role": "system", "content": "S", "response_format": {
        "type": "json_schema", "schema": {"a": [1, 2.5, True, None, "x\n\"y\"\t\u0001é"]}}},
        {"role": "user", "content": "Q"}]),
    ("thinking", {}, [
        {"role": "user", "content": "first"}, {"role": "user", "content": "second"},
        {"role": "assistant", "content": "ok"}]),
    ("thinking", {}, [
        {"role": "developer", "content": "dev rules"}, {"role": "user", "content": "a"},
        {"role": "assistant", "reasoning_content": "r", "content": "b"},
        {"role": "user", "content": "c"}]),
    ("thinking", {}, [
        {"role": "system", "content": "S", "tools": TOOLS},
        {"role": "user", "content": "compute"},
        {"role": "assistant", "reasoning_content": "two calls", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\": 1}"}},
            {"id": "c2", "type": "function", "function": {"name": "calc",
                                                          "arguments": "{\"x\": [1, {\"k\": false}], \"s\": \"t\"}"}},
            {"id": "c3", "type": "function", "function": {"name": "calc", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c3", "content": "three"},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "one"},
                                                           {"type": "image"}]},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "reasoning_content": "done", "content": "6"}]),
    ("chat", {}, [
        {"role": "user", "content": "title this", "task": "query"},
        {"role": "assistant", "content": "q", "task": "title"},
        {"role": "user", "content": "go on"},
        {"role": "assistant", "content": "partial", "wo_eos": True}]),
    ("thinking", {}, [
        {"role": "system", "content": "S"},
        {"role": "latest_reminder", "content": "2026-01-01"},
        {"role": "user", "content": "U"}]),
]

for mode, opts, messages in CASES:
    text = encode_messages(json.loads(json.dumps(messages)), thinking_mode=mode, **opts)
    print(json.dumps({"mode": mode, "options": opts, "messages": messages, "expected": text},
                     ensure_ascii=False))
