#!/usr/bin/env python3
"""Regenerate tests/data/utf8-repair.txt with CPython's UTF-8 decoder.

usage: make-utf8-repair.py > tests/data/utf8-repair.txt

Each line is "INPUT-HEX OUTPUT-HEX" (a lone "-" for empty): the input is a
random byte string drawn to be mostly near-UTF-8 (leads, continuations, the
edge bytes of table 3-7, ASCII), the output what
bytes.decode("utf-8", "replace") gives, encoded again as UTF-8.  CPython
replaces maximal subparts, as the Unicode Standard recommends; tome's
tome_utf8_repair must give the same bytes.
"""
import random

EDGES = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
         0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5,
         0xF8, 0xFE, 0xFF]

rng = random.Random(20261202)
for case in range(600):
    n = rng.randint(0, 12)
    data = bytes(rng.choice(EDGES) if rng.random() < 0.7 else rng.randint(0, 255)
                 for _ in range(n))
    out = data.decode("utf-8", "replace").encode("utf-8")
    print(data.hex() or "-", out.hex() or "-")
