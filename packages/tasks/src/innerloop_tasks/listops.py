"""ListOps (Nangia & Bowman 2018) as Long Range Arena builds it: generator, evaluator, tokenizer.

A tree is a digit 0..9 or (operator, [children]). Operators on digits:
  MIN, MAX     the smallest / largest child
  MED          int(median): the mean of the two middle values for an even count, truncated
  SM           sum modulo 10
Generator rules (our reimplementation of the LRA description): the root is at depth 1; below
`max_depth` a node is a leaf with probability 0.75, else an operator with 2..max_args children
(inclusive); at max_depth always a leaf. A tree's length = values + operators + closing
brackets; samples are kept when min_length < length < max_length, unique by their string.
Regenerated splits are new samples of the same distribution, not LRA's files.

Strings use LRA's tokens without its parentheses (which the LRA tokenizer drops anyway):
"[MAX 2 9 [MIN 4 7 ] 0 ]". The tokenizer maps "]" to "X" and drops "(" and ")", so it reads
both our strings and the LRA TSVs.
"""

from __future__ import annotations

import random
import statistics
from typing import Union

import numpy as np

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
Tree = Union[int, tuple[str, list["Tree"]]]

# Vocabulary: pad 0, unk 1, eos 2, then the 10 digits, the 4 operators and the closing "X" (18).
PAD, UNK, EOS = 0, 1, 2
VOCAB = ("<pad>", "<unk>", "<eos>", *[str(d) for d in range(10)], *OPERATORS, "X")
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}


def evaluate(tree: Tree) -> int:
  """The value of a tree (a digit)."""
  if isinstance(tree, int):
    return tree
  op, children = tree
  values = [evaluate(c) for c in children]
  if op == "[MIN":
    return min(values)
  if op == "[MAX":
    return max(values)
  if op == "[MED":
    return int(statistics.median(values))
  if op == "[SM":
    return sum(values) % 10
  raise ValueError(f"unknown ListOps operator {op!r}")


def to_string(tree: Tree) -> str:
  if isinstance(tree, int):
    return str(tree)
  op, children = tree
  return " ".join([op, *(to_string(c) for c in children), "]"])


def tree_length(tree: Tree) -> int:
  """Values + operators + closing brackets."""
  if isinstance(tree, int):
    return 1
  return 2 + sum(tree_length(c) for c in tree[1])


def parse(text: str) -> Tree:
  """The tree of a ListOps string (LRA format with or without parentheses)."""
  tokens = [t for t in text.replace("(", " ").replace(")", " ").split() if t]
  stack: list[tuple[str, list]] = []
  root: Tree | None = None
  for tok in tokens:
    if tok in OPERATORS:
      stack.append((tok, []))
    elif tok == "]":
      if not stack:
        raise ValueError(f"unbalanced ']' in {text!r}")
      node = stack.pop()
      if stack:
        stack[-1][1].append(node)
      else:
        root = node
    elif tok.isdigit() and len(tok) == 1:
      if stack:
        stack[-1][1].append(int(tok))
      else:
        root = int(tok)
    else:
      raise ValueError(f"unknown ListOps token {tok!r} in {text!r}")
  if stack or root is None:
    raise ValueError(f"incomplete ListOps expression {text!r}")
  return root


def _generate(rng: random.Random, depth: int, max_depth: int, max_args: int) -> Tree:
  if depth >= max_depth or rng.random() < 0.75:
    return rng.randint(0, 9)
  op = rng.choice(OPERATORS)
  children = [
    _generate(rng, depth + 1, max_depth, max_args) for _ in range(rng.randint(2, max_args))
  ]
  return (op, children)


def generate(
  seed: int,
  num: int,
  *,
  max_depth: int = 10,
  max_args: int = 10,
  min_length: int = 500,
  max_length: int = 2000,
  max_tries: int = 10_000_000,
) -> list[tuple[str, int]]:
  """`num` unique (string, value) samples with min_length < length < max_length."""
  rng = random.Random(seed)
  seen: set[str] = set()
  out: list[tuple[str, int]] = []
  for _ in range(max_tries):
    if len(out) == num:
      return out
    tree = _generate(rng, 1, max_depth, max_args)
    if not min_length < tree_length(tree) < max_length:
      continue
    text = to_string(tree)
    if text not in seen:
      seen.add(text)
      out.append((text, evaluate(tree)))
  raise RuntimeError(f"ListOps: only {len(out)} of {num} samples after {max_tries} tries")


def tokenize(text: str) -> list[int]:
  """Token ids of a ListOps string (parentheses dropped, "]" -> "X"), EOS appended."""
  ids = []
  for tok in text.replace("(", " ").replace(")", " ").split():
    ids.append(TOKEN_ID.get("X" if tok == "]" else tok, UNK))
  return ids + [EOS]


def encode(texts: list[str], max_len: int):
  """(ids [B, max_len] int32 right-padded with PAD, lengths [B]); longer inputs are truncated."""
  ids = np.full((len(texts), max_len), PAD, np.int32)
  lengths = np.zeros((len(texts),), np.int32)
  for i, text in enumerate(texts):
    seq = tokenize(text)[:max_len]
    ids[i, : len(seq)] = seq
    lengths[i] = len(seq)
  return ids, lengths
