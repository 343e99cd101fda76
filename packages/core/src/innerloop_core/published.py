"""Published-results check: compare a paper's claims with what the pipeline reproduced.

Each paper keeps its claims in ``papers/<slug>/published.yaml``; a training run writes JSON
results under ``papers/<slug>/results/<profile>/``. :func:`evaluate` judges every claim for
one profile, :func:`write_report` writes ``check.json`` + ``check.md`` into
``papers/<slug>/check/<profile>/`` (its own directory, so that the pipeline's train and check
stages have disjoint outputs), and
:func:`write_reproduction_summary` rolls every paper up into the root ``REPRODUCTION.md``.

Schema (every mapping rejects unknown fields)::

    paper: {slug, title, citation}
    claims:
      - id: fig2-loss              # unique, [a-z0-9-]+
        source: "Fig 2"
        statement: "..."
        profiles: [cpu, full]      # non-empty subset of tiny | cpu | full
        seeds: 2                   # optional, informative
        metric: {file, key, aggregate, definition, label?}
        published: {value, how, precision?, quote?}
        check: {kind, ...}
        deviation: "..."           # optional

``metric.key`` is a dotted path into the JSON file (an all-digit segment indexes a list). The
value there is a number or a list of numbers, one per seed; ``aggregate`` (default ``mean``)
reduces the list, or ``per_seed`` judges every seed and passes when at least
``check.min_fraction`` (default 1.0) of them pass. ``published.how`` is ``unknown`` exactly when
``published.value`` is null.

Check kinds (``reference`` is optional: ``{key, file?, aggregate?, label?}`` points at another
reproduced metric, with file/aggregate defaulting to the claim metric's; ``{value}`` is a fixed
number; absent means ``published.value``):

* ``abs_tol``   {tol, reference?}        |reproduced - ref| <= tol
* ``rel_tol``   {tol, reference?}        |reproduced - ref| <= tol * |ref|
* ``interval``  {low?, high?}            low <= reproduced <= high (at least one bound)
* ``threshold`` {op, value? | reference?}  reproduced op ref, op in < <= > >=
* ``ordering``  {op, order}              metric op order[0] op order[1] ...; the claim's own
  ``metric`` is the first term and ``order`` lists the following ones ({key, file?, aggregate?,
  label?}), op in < >.
* ``curve``     {tol, relative?}         the key holds ``{"x": [...], "y": [...]}`` (``y`` may be
  seeds x points); reproduced y is interpolated at the published x (published.value is a list of
  [x, y] pairs) and passes when max |dy| <= tol, or max |dy|/|y_pub| <= tol with relative: true.
  Published x outside the reproduced x range fails instead of being silently extrapolated.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import numpy as np
import yaml
from pydantic import (
  AfterValidator,
  BaseModel,
  ConfigDict,
  Field,
  ValidationError,
  field_validator,
  model_validator,
)

PROFILES: tuple[str, ...] = ("tiny", "cpu", "full")
CHECK_DIR = "check"  # reports live in papers/<slug>/check/<profile>/
PASS, FAIL, NOT_RUN, UNKNOWN = "PASS", "FAIL", "NOT RUN", "UNKNOWN PUBLISHED VALUE"
STATUSES: tuple[str, ...] = (PASS, FAIL, NOT_RUN, UNKNOWN)
KINDS: tuple[str, ...] = ("abs_tol", "rel_tol", "interval", "threshold", "ordering", "curve")

_OPS: dict[str, Callable[[Any, Any], Any]] = {
  "<": operator.lt,
  "<=": operator.le,
  ">": operator.gt,
  ">=": operator.ge,
}


class PublishedSchemaError(ValueError):
  """published.yaml is unreadable or violates the schema; the message is one line."""


# --------------------------------------------------------------------------------- schema
# strict=True so YAML strings ("0.2") and booleans are not silently coerced to numbers.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
Aggregate = Literal["mean", "median", "min", "max", "per_seed"]
Profile = Literal["tiny", "cpu", "full"]
Text = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
  model_config = ConfigDict(extra="forbid", frozen=True)

  @model_validator(mode="before")
  @classmethod
  def _reject_unknown_fields(cls, data: Any) -> Any:
    # Pydantic's own extra_forbidden error does not say what *is* allowed; this one does.
    if isinstance(data, dict):
      unknown = [str(k) for k in data if k not in cls.model_fields]
      if unknown:
        names = ", ".join(repr(k) for k in sorted(unknown))
        allowed = sorted(
          cls.model_fields, key=lambda f: f != "kind"
        )  # kind first, else as declared
        raise ValueError(f"unknown field {names}; allowed: {', '.join(allowed)}")
    return data


def _relative_file(path: str) -> str:
  """Result files must stay inside the results dir so one profile cannot read another's."""
  p = Path(path)
  if not path or p.is_absolute() or ".." in p.parts:
    raise ValueError(f"file must be a relative path inside the results dir, got {path!r}")
  return path


def _dotted_key(key: str) -> str:
  if not key or any(part == "" for part in key.split(".")):
    raise ValueError(f"key must be a dotted path like 'a.b.c', got {key!r}")
  return key


RelFile = Annotated[str, AfterValidator(_relative_file)]
DottedKey = Annotated[str, AfterValidator(_dotted_key)]


class PaperInfo(_Strict):
  slug: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]
  title: Text
  citation: Text


class Metric(_Strict):
  file: RelFile
  key: DottedKey
  aggregate: Aggregate = "mean"
  definition: Text
  label: str | None = None


class MetricRef(_Strict):
  """Another reproduced metric; file and aggregate default to the claim metric's."""

  key: DottedKey
  file: RelFile | None = None
  aggregate: Aggregate | None = None
  label: str | None = None


class Reference(_Strict):
  """Either a reproduced metric ``{key, file?, aggregate?, label?}`` or a fixed ``{value}``."""

  key: DottedKey | None = None
  file: RelFile | None = None
  aggregate: Aggregate | None = None
  label: str | None = None
  value: Number | None = None

  @model_validator(mode="after")
  def _one_source(self) -> Reference:
    if (self.key is None) == (self.value is None):
      raise ValueError("give exactly one of 'key' (a reproduced metric) or 'value' (a number)")
    if self.value is not None and (self.file or self.aggregate or self.label):
      raise ValueError("'file', 'aggregate' and 'label' only go with 'key', not with 'value'")
    return self


class _CheckBase(_Strict):
  # Only meaningful with metric.aggregate: per_seed (enforced on Claim).
  min_fraction: Annotated[float, Field(strict=True, gt=0, le=1)] = 1.0


class AbsTolCheck(_CheckBase):
  kind: Literal["abs_tol"]
  tol: NonNegative
  reference: Reference | None = None


class RelTolCheck(_CheckBase):
  kind: Literal["rel_tol"]
  tol: NonNegative
  reference: Reference | None = None


class IntervalCheck(_CheckBase):
  kind: Literal["interval"]
  low: Number | None = None
  high: Number | None = None

  @model_validator(mode="after")
  def _bounds(self) -> IntervalCheck:
    if self.low is None and self.high is None:
      raise ValueError("give 'low', 'high' or both")
    if self.low is not None and self.high is not None and self.low > self.high:
      raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
    return self


class ThresholdCheck(_CheckBase):
  kind: Literal["threshold"]
  op: Literal["<", "<=", ">", ">="]
  value: Number | None = None
  reference: Reference | None = None

  @model_validator(mode="after")
  def _one_target(self) -> ThresholdCheck:
    if self.value is not None and self.reference is not None:
      raise ValueError("give 'value' or 'reference', not both (neither: published.value)")
    return self


class OrderingCheck(_CheckBase):
  kind: Literal["ordering"]
  op: Literal["<", ">"]
  order: Annotated[list[MetricRef], Field(min_length=1)]


class CurveCheck(_CheckBase):
  kind: Literal["curve"]
  tol: NonNegative
  relative: Annotated[bool, Field(strict=True)] = False


Check = Annotated[
  Union[AbsTolCheck, RelTolCheck, IntervalCheck, ThresholdCheck, OrderingCheck, CurveCheck],
  Field(discriminator="kind"),
]


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


class PublishedValue(_Strict):
  value: Any = None
  how: Literal["text", "table", "code", "figure_estimate", "unknown"]
  precision: str | None = None
  quote: str | None = None

  @field_validator("value")
  @classmethod
  def _value_shape(cls, v: Any) -> float | list[tuple[float, float]] | None:
    if v is None:
      return None
    if _is_number(v):
      return float(v)
    if (
      isinstance(v, list)
      and v
      and all(isinstance(p, list) and len(p) == 2 and all(_is_number(c) for c in p) for p in v)
    ):
      return [(float(x), float(y)) for x, y in v]
    raise ValueError("must be a finite number, null, or (for curves) a list of [x, y] number pairs")

  @model_validator(mode="after")
  def _how_matches_value(self) -> PublishedValue:
    if (self.how == "unknown") != (self.value is None):
      raise ValueError(
        "how must be 'unknown' exactly when value is null "
        f"(got how={self.how!r}, value={'null' if self.value is None else 'set'})"
      )
    return self


class Claim(_Strict):
  id: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]
  source: Text
  statement: Text
  profiles: Annotated[list[Profile], Field(min_length=1)]
  seeds: Annotated[int, Field(strict=True, ge=1)] | None = None
  metric: Metric
  published: PublishedValue
  check: Check
  deviation: str | None = None

  @field_validator("profiles")
  @classmethod
  def _unique_profiles(cls, v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
      raise ValueError(f"profiles must not repeat, got {v}")
    return v

  @model_validator(mode="after")
  def _consistent(self) -> Claim:
    check, pub = self.check, self.published.value
    if isinstance(check, CurveCheck):
      if pub is not None and not isinstance(pub, list):
        raise ValueError(
          "check kind 'curve' needs published.value as a list of [x, y] pairs (or null)"
        )
    elif isinstance(pub, list):
      raise ValueError(
        f"published.value is a curve but check kind is {check.kind!r}; use kind 'curve'"
      )
    per_seed = self.metric.aggregate == "per_seed"
    if "min_fraction" in check.model_fields_set and not per_seed:
      raise ValueError("check.min_fraction only applies when metric.aggregate is 'per_seed'")
    refs = list(getattr(check, "order", None) or [])
    if getattr(check, "reference", None) is not None:
      refs.append(check.reference)
    if not per_seed and any(r.aggregate == "per_seed" for r in refs):
      raise ValueError("a per_seed reference/order term needs metric.aggregate 'per_seed' too")
    return self


class Published(_Strict):
  paper: PaperInfo
  claims: Annotated[list[Claim], Field(min_length=1)]

  @field_validator("claims")
  @classmethod
  def _unique_ids(cls, claims: list[Claim]) -> list[Claim]:
    seen: set[str] = set()
    for c in claims:
      if c.id in seen:
        raise ValueError(f"duplicate claim id {c.id!r}")
      seen.add(c.id)
    return claims


def _format_schema_error(path: Path, err: ValidationError, raw: Any) -> str:
  """One line naming file, claim id and field path (the first error; the rest are counted)."""
  errors = err.errors()
  first = errors[0]
  loc = list(first["loc"])
  where = ""
  if len(loc) >= 2 and loc[0] == "claims" and isinstance(loc[1], int):
    claims = raw.get("claims") if isinstance(raw, dict) else None
    item = claims[loc[1]] if isinstance(claims, list) and loc[1] < len(claims) else None
    cid = item.get("id") if isinstance(item, dict) else None
    where = f"claim {cid!r}: " if isinstance(cid, str) else f"claim #{loc[1] + 1}: "
    loc = loc[2:]
  parts: list[str] = []
  for i, p in enumerate(loc):
    if isinstance(p, int):
      parts.append(f"[{p}]")
    elif i > 0 and loc[i - 1] == "check" and p in KINDS:
      continue  # discriminated-union tag pydantic inserts into the path; not a real field
    else:
      parts.append(("." if parts else "") + str(p))
  field_path = "".join(parts) or ("" if where else "(top level)")
  msg = first["msg"].removeprefix("Value error, ")
  if first["type"] == "union_tag_not_found":
    msg = f"missing 'kind'; allowed: {', '.join(KINDS)}"
  more = (
    f" (+{len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
  )
  prefix = f"{where}{field_path}: " if field_path else where
  return f"{path}: {prefix}{msg}{more}".replace("\n", " ")


def load_published(path: str | os.PathLike[str]) -> Published:
  """Parse and validate a published.yaml; raises PublishedSchemaError with a one-line message."""
  path = Path(path)
  try:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
  except OSError as e:
    raise PublishedSchemaError(f"{path}: cannot read: {e.strerror or e}") from None
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or "invalid YAML"
    raise PublishedSchemaError(f"{path}: YAML error{at}: {problem}") from None
  if not isinstance(raw, dict):
    raise PublishedSchemaError(f"{path}: (top level): must be a mapping with 'paper' and 'claims'")
  try:
    return Published.model_validate(raw)
  except ValidationError as e:
    raise PublishedSchemaError(_format_schema_error(path, e, raw)) from None


# ----------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class ClaimResult:
  id: str
  source: str
  statement: str
  status: str
  published: str
  reproduced: str
  tolerance: str
  reason: str
  deviation: str = ""
  applies: bool = True  # the profile is in the claim's profiles (drives --strict)


@dataclass
class CheckReport:
  profile: str
  paper: dict[str, str]
  rows: list[ClaimResult] = field(default_factory=list)

  @property
  def counts(self) -> dict[str, int]:
    return {s: sum(r.status == s for r in self.rows) for s in STATUSES}

  def to_dict(self) -> dict[str, Any]:
    return {
      "paper": self.paper,
      "profile": self.profile,
      "counts": self.counts,
      "claims": [asdict(r) for r in self.rows],
    }


def strict_failures(report: CheckReport) -> list[ClaimResult]:
  """Rows that make ``--strict`` fail: FAIL, or NOT RUN for a claim that applies to the profile.

  UNKNOWN PUBLISHED VALUE is not a failure: the reproduction ran and nothing contradicts it.
  """
  return [r for r in report.rows if r.status == FAIL or (r.status == NOT_RUN and r.applies)]


class _Unavailable(Exception):
  """The metric cannot be read (missing file/key, wrong type): the claim is NOT RUN."""


def _fmt(x: float) -> str:
  return f"{float(x):.4g}"


def _fmt_list(xs: np.ndarray) -> str:
  return "[" + ", ".join(_fmt(x) for x in xs) + "]"


class _Results:
  """Reads result JSON files once each and walks dotted keys into them."""

  def __init__(self, results_dir: Path) -> None:
    self.dir = results_dir
    self._cache: dict[str, Any] = {}

  def _load(self, file: str) -> Any:
    if file not in self._cache:
      path = self.dir / file
      try:
        self._cache[file] = json.loads(path.read_text(encoding="utf-8"))
      except FileNotFoundError:
        self._cache[file] = _Unavailable(f"missing file {file} in {self.dir}")
      except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        self._cache[file] = _Unavailable(f"cannot read {file}: {str(e).splitlines()[0]}")
    data = self._cache[file]
    if isinstance(data, _Unavailable):
      raise data
    return data

  def lookup(self, file: str, key: str) -> Any:
    node = self._load(file)
    walked: list[str] = []
    for part in key.split("."):
      if isinstance(node, dict) and part in node:
        node = node[part]
      elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
        node = node[int(part)]
      else:
        under = f" (no {part!r} under {'.'.join(walked)!r})" if walked else ""
        raise _Unavailable(f"missing key {key} in {file}{under}")
      walked.append(part)
    return node


def _numbers(node: Any, where: str) -> np.ndarray:
  """A number or list of numbers as a 1-D float array; JSON null counts as non-finite."""
  items = node if isinstance(node, list) else [node]
  if not items:
    raise _Unavailable(f"{where} is an empty list")
  out = []
  for x in items:
    if x is None:
      out.append(np.nan)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
      out.append(float(x))
    else:
      raise _Unavailable(
        f"{where} holds {type(x).__name__}; expected a number or a list of numbers"
      )
  return np.asarray(out, dtype=float)


def _reduce(values: np.ndarray, aggregate: str, axis: int = 0) -> np.ndarray:
  if aggregate == "per_seed":
    return values
  fn = {"mean": np.mean, "median": np.median, "min": np.min, "max": np.max}[aggregate]
  with np.errstate(all="ignore"):  # inf - inf etc. should surface as nan, not warnings
    return np.expand_dims(fn(values, axis=axis), axis)


@dataclass
class _Term:
  label: str
  values: np.ndarray  # one entry per seed when per_seed, else a single aggregated entry
  per_seed: bool
  raw_count: int
  aggregate: str

  def show(self) -> str:
    if self.per_seed:
      return _fmt_list(self.values)
    if self.raw_count > 1:
      return f"{_fmt(self.values[0])} ({self.aggregate} of {self.raw_count})"
    return _fmt(self.values[0])


def _term(
  results: _Results,
  metric: Metric,
  file: str | None,
  key: str,
  aggregate: str | None,
  label: str | None,
) -> _Term:
  file, aggregate = file or metric.file, aggregate or metric.aggregate
  raw = _numbers(results.lookup(file, key), f"{file}:{key}")
  return _Term(label or key, _reduce(raw, aggregate), aggregate == "per_seed", raw.size, aggregate)


def _broadcast(terms: list[_Term]) -> int:
  """Seed count shared by the per-seed terms; scalars broadcast. Raises ValueError on mismatch."""
  sizes = {t.label: t.values.size for t in terms if t.per_seed}
  if len(set(sizes.values())) > 1:
    raise ValueError("seed counts differ: " + ", ".join(f"{k} has {v}" for k, v in sizes.items()))
  return next(iter(sizes.values()), 1)


def _published_str(p: PublishedValue) -> str:
  if p.value is None:
    return "unknown"
  shown = f"{len(p.value)}-point curve" if isinstance(p.value, list) else _fmt(p.value)
  return f"{shown} ({p.how.replace('_', ' ')})"


def _reference_term(results: _Results, claim: Claim, ref: Reference | None) -> _Term | None:
  """The comparison target; None means published.value, which the caller checks for null."""
  if ref is None:
    if claim.published.value is None:
      return None
    return _Term("published", np.array([claim.published.value]), False, 1, "value")
  if ref.value is not None:
    return _Term(_fmt(ref.value), np.array([ref.value]), False, 1, "value")
  return _term(results, claim.metric, ref.file, ref.key, ref.aggregate, ref.label)


def _needs_published(check: Any) -> bool:
  if isinstance(check, CurveCheck):
    return True
  if isinstance(check, (AbsTolCheck, RelTolCheck)):
    return check.reference is None
  if isinstance(check, ThresholdCheck):
    return check.reference is None and check.value is None
  return False


def _static_tolerance(claim: Claim) -> str:
  c = claim.check
  if isinstance(c, (AbsTolCheck, RelTolCheck)):
    amount = _fmt(c.tol) if isinstance(c, AbsTolCheck) else f"{_fmt(100 * c.tol)}%"
    target = (
      "published"
      if c.reference is None
      else (c.reference.label or c.reference.key or _fmt(c.reference.value))
    )
    text = f"±{amount} of {target}"
  elif isinstance(c, IntervalCheck):
    text = (
      f"in [{_fmt(c.low)}, {_fmt(c.high)}]"
      if c.low is not None and c.high is not None
      else f">= {_fmt(c.low)}"
      if c.low is not None
      else f"<= {_fmt(c.high)}"
    )
  elif isinstance(c, ThresholdCheck):
    target = (
      _fmt(c.value)
      if c.value is not None
      else "published"
      if c.reference is None
      else c.reference.label or c.reference.key or _fmt(c.reference.value)
    )
    text = f"{c.op} {target}"
  elif isinstance(c, OrderingCheck):
    labels = [claim.metric.label or claim.metric.key] + [t.label or t.key for t in c.order]
    text = f" {c.op} ".join(labels)
  else:
    text = f"max |Δy|/|y| <= {_fmt(100 * c.tol)}%" if c.relative else f"max |Δy| <= {_fmt(c.tol)}"
    text += " at published x"
  if claim.metric.aggregate == "per_seed":
    text += (
      " (every seed)" if c.min_fraction >= 1 else f" (>= {_fmt(100 * c.min_fraction)}% of seeds)"
    )
  return text


def _judge_scalar(claim: Claim, results: _Results) -> tuple[str, str, str]:
  """(status, reproduced, reason) for every kind except curve."""
  c, m = claim.check, claim.metric
  main = _term(results, m, None, m.key, None, m.label)
  terms = [main]
  if isinstance(c, OrderingCheck):
    terms += [_term(results, m, t.file, t.key, t.aggregate, t.label) for t in c.order]
  ref: _Term | None = None
  if isinstance(c, (AbsTolCheck, RelTolCheck)):
    ref = _reference_term(results, claim, c.reference)
  elif isinstance(c, ThresholdCheck):
    ref = (
      _Term(_fmt(c.value), np.array([c.value]), False, 1, "value")
      if c.value is not None
      else _reference_term(results, claim, c.reference)
    )
  reproduced = ", ".join(f"{t.label}: {t.show()}" for t in terms) if len(terms) > 1 else main.show()
  if ref is not None:
    terms.append(ref)  # the target is always the last term
    if ref.aggregate != "value":  # a reproduced reference is shown; fixed numbers are in Tolerance
      reproduced += f"; {ref.label}: {ref.show()}"

  # A non-finite reproduced value can never pass, so FAIL it before anything else.
  finite = np.isfinite(main.values)
  need = c.min_fraction * main.values.size - 1e-9 if main.per_seed else 1
  if finite.sum() < need:
    bad = ", ".join(f"seed {i}" for i in np.flatnonzero(~finite)) if main.per_seed else "value"
    return FAIL, reproduced, f"non-finite reproduced {bad}"
  if _needs_published(c) and claim.published.value is None:
    return UNKNOWN, reproduced, "published value unknown; check not evaluated"
  try:
    n = _broadcast(terms)
  except ValueError as e:
    return FAIL, reproduced, str(e)
  vals = [np.broadcast_to(t.values, (n,)) for t in terms]
  r = vals[0]
  with np.errstate(all="ignore"):
    if isinstance(c, AbsTolCheck):
      diff = np.abs(r - vals[-1])
      ok = diff <= c.tol
      detail = [f"|Δ| = {_fmt(d)}" for d in diff]
    elif isinstance(c, RelTolCheck):
      diff, scale = np.abs(r - vals[-1]), np.abs(vals[-1])
      ok = diff <= c.tol * scale
      detail = [f"|Δ|/|ref| = {_fmt(100 * d / s) if s else 'inf'}%" for d, s in zip(diff, scale)]
    elif isinstance(c, IntervalCheck):
      lo = -np.inf if c.low is None else c.low
      hi = np.inf if c.high is None else c.high
      ok = (r >= lo) & (r <= hi)
      detail = [
        f"{_fmt(x)} {'<' if x < lo else '>' if x > hi else 'in'} "
        f"{'low ' + _fmt(lo) if x < lo else 'high ' + _fmt(hi) if x > hi else 'range'}"
        for x in r
      ]
    elif isinstance(c, ThresholdCheck):
      ok = _OPS[c.op](r, vals[-1])
      detail = [
        f"{_fmt(x)} {'' if good else 'not '}{c.op} {_fmt(y)}" for x, y, good in zip(r, vals[-1], ok)
      ]
    else:  # ordering: every adjacent pair must satisfy op
      pairs = [_OPS[c.op](vals[i], vals[i + 1]) for i in range(len(c.order))]
      ok = np.logical_and.reduce(pairs)
      detail = []
      for s in range(n):
        broken = next((i for i, p in enumerate(pairs) if not p[s]), None)
        detail.append(
          "order holds"
          if broken is None
          else f"{terms[broken].label} ({_fmt(vals[broken][s])}) not {c.op} "
          f"{terms[broken + 1].label} ({_fmt(vals[broken + 1][s])})"
        )
  bad = ~np.isfinite(np.stack(vals)).all(axis=0)
  ok = ok & ~bad
  detail = ["non-finite value" if b else d for d, b in zip(detail, bad)]
  return _verdict(claim, ok, detail, per_seed=main.per_seed, reproduced=reproduced)


def _verdict(
  claim: Claim, ok: np.ndarray, detail: list[str], *, per_seed: bool, reproduced: str
) -> tuple[str, str, str]:
  """Fold per-seed outcomes into one status with min_fraction."""
  if not per_seed:
    return (PASS if ok[0] else FAIL), reproduced, detail[0]
  n, k = ok.size, int(ok.sum())
  passed = k >= claim.check.min_fraction * n - 1e-9  # tolerate 0.1 + 0.2 style rounding
  failing = "; ".join(f"seed {i}: {detail[i]}" for i in np.flatnonzero(~ok))
  reason = f"{k}/{n} seeds pass" + (f" ({failing})" if failing else "")
  return (PASS if passed else FAIL), reproduced, reason


def _judge_curve(claim: Claim, results: _Results) -> tuple[str, str, str]:
  c, m = claim.check, claim.metric
  node = results.lookup(m.file, m.key)
  where = f"{m.file}:{m.key}"
  if not (isinstance(node, dict) and "x" in node and "y" in node):
    raise _Unavailable(f'{where} must hold {{"x": [...], "y": [...]}} for a curve check')
  x = _numbers(node["x"], f"{where}.x")
  ys = node["y"]
  seeds = ys if isinstance(ys, list) and ys and all(isinstance(r, list) for r in ys) else [ys]
  rows = [_numbers(r, f"{where}.y") for r in seeds]
  if any(r.size != x.size for r in rows):
    raise _Unavailable(f"{where}: y must have one entry per x ({x.size}), or be seeds x points")
  y = np.stack(rows)
  y = _reduce(y, m.aggregate, axis=0)
  per_seed = m.aggregate == "per_seed"
  reproduced = f"{x.size}-point curve" + (f" x {y.shape[0]} seeds" if per_seed else "")
  if claim.published.value is None:
    return UNKNOWN, reproduced, "published value unknown; check not evaluated"
  if not np.isfinite(x).all() or np.any(np.diff(x) <= 0):
    return FAIL, reproduced, f"{where}.x must be finite and strictly increasing"
  pub = np.asarray(claim.published.value, dtype=float)
  px, py = pub[:, 0], pub[:, 1]
  outside = px[(px < x[0]) | (px > x[-1])]
  if outside.size:  # np.interp would clamp, hiding a reproduced curve that is too short
    return (
      FAIL,
      reproduced,
      (f"published x {_fmt_list(outside)} outside reproduced range [{_fmt(x[0])}, {_fmt(x[-1])}]"),
    )
  ok, detail = np.zeros(y.shape[0], bool), []
  with np.errstate(all="ignore"):
    for s, ys_ in enumerate(y):
      if not np.isfinite(ys_).all():
        detail.append("non-finite value")
        continue
      delta = np.abs(np.interp(px, x, ys_) - py)
      if c.relative:
        delta = np.where(delta == 0, 0.0, delta / np.abs(py))
      worst = int(np.argmax(delta))
      ok[s] = delta[worst] <= c.tol
      shown = f"{_fmt(100 * delta[worst])}%" if c.relative else _fmt(delta[worst])
      detail.append(f"max |Δy|{'/|y|' if c.relative else ''} = {shown} at x = {_fmt(px[worst])}")
  return _verdict(claim, ok, detail, per_seed=per_seed, reproduced=reproduced)


def _evaluate_claim(claim: Claim, results: _Results, profile: str) -> ClaimResult:
  def row(status: str, reproduced: str, reason: str, applies: bool = True) -> ClaimResult:
    return ClaimResult(
      claim.id,
      claim.source,
      claim.statement,
      status,
      _published_str(claim.published),
      reproduced,
      _static_tolerance(claim),
      reason,
      claim.deviation or "",
      applies,
    )

  if profile not in claim.profiles:
    return row(
      NOT_RUN,
      "—",
      f"not in profile {profile} (claim profiles: {', '.join(claim.profiles)})",
      applies=False,
    )
  try:
    judge = _judge_curve if isinstance(claim.check, CurveCheck) else _judge_scalar
    return row(*judge(claim, results))
  except _Unavailable as e:
    return row(NOT_RUN, "—", str(e))


def evaluate(
  published: Published, results_dir: str | os.PathLike[str], profile: str
) -> CheckReport:
  """Judge every claim for one profile; every claim gets a row, none is skipped."""
  if profile not in PROFILES:
    raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
  results = _Results(Path(results_dir))
  return CheckReport(
    profile=profile,
    paper=published.paper.model_dump(),
    rows=[_evaluate_claim(c, results, profile) for c in published.claims],
  )


# -------------------------------------------------------------------------------- reports
def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ").strip()


def render_markdown(report: CheckReport) -> str:
  """A heading, the status counts, and one table row per claim."""
  counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
  lines = [
    f"# Published-results check: {report.paper['slug']} ({report.profile})",
    "",
    f"{report.paper['title']} — {report.paper['citation']}",
    "",
    f"{len(report.rows)} claims: {counts}.",
    "",
    "| Claim | Source | Published | Reproduced | Tolerance | Status | Notes |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in report.rows:
    notes = r.reason + (f" — deviation: {r.deviation}" if r.deviation else "")
    cells = [
      f"`{r.id}`: {r.statement}",
      r.source,
      r.published,
      r.reproduced,
      r.tolerance,
      f"**{r.status}**",
      notes,
    ]
    lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
  return "\n".join(lines) + "\n"


def write_report(report: CheckReport, results_dir: str | os.PathLike[str]) -> None:
  """Write check.json (sorted keys, no timestamps, so reruns are byte-identical) and check.md."""
  out = Path(results_dir)
  out.mkdir(parents=True, exist_ok=True)
  text = json.dumps(report.to_dict(), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
  (out / "check.json").write_text(text + "\n", encoding="utf-8")
  (out / "check.md").write_text(render_markdown(report), encoding="utf-8")


def _read_statuses(path: Path) -> dict[str, str] | None:
  if not path.is_file():
    return None
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {c["id"]: c["status"] for c in data["claims"]}
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: not a check.json written by this module ({e})") from None


def write_reproduction_summary(
  repo_root: str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> None:
  """Write REPRODUCTION.md: per paper, claims x profiles with each profile's check status."""
  root, out = Path(repo_root), Path(out_path)
  papers = [(p.parent, load_published(p)) for p in sorted(root.glob("papers/*/published.yaml"))]
  overview = [
    "| Paper | Claims | " + " | ".join(PROFILES) + " |",
    "|---|---|" + "---|" * len(PROFILES),
  ]
  sections: list[str] = []
  for paper_dir, pub in papers:
    statuses = {p: _read_statuses(paper_dir / CHECK_DIR / p / "check.json") for p in PROFILES}
    link = Path(os.path.relpath(paper_dir, out.parent)).as_posix()
    cells = []
    for p in PROFILES:
      applicable = [c for c in pub.claims if p in c.profiles]
      if not applicable:
        cells.append("n/a")
      elif statuses[p] is None:
        cells.append("—")
      else:
        n_pass = sum(statuses[p].get(c.id) == PASS for c in applicable)
        cells.append(f"{n_pass}/{len(applicable)} PASS")
    overview.append(
      f"| [{pub.paper.slug}]({link}) | {len(pub.claims)} | " + " | ".join(cells) + " |"
    )
    sections += [
      "",
      f"## {pub.paper.slug}: {_cell(pub.paper.title)}",
      "",
      pub.paper.citation,
      "",
      "| Claim | Source | Statement | " + " | ".join(PROFILES) + " |",
      "|---|---|---|" + "---|" * len(PROFILES),
    ]
    for c in pub.claims:
      row = []
      for p in PROFILES:
        if p not in c.profiles:
          row.append("n/a")
        elif statuses[p] is None or c.id not in statuses[p]:
          row.append("—")
        else:
          row.append(statuses[p][c.id])
      sections.append(
        f"| `{c.id}` | {_cell(c.source)} | {_cell(c.statement)} | " + " | ".join(row) + " |"
      )
  text = "\n".join(
    [
      "# Reproduction status",
      "",
      "<!-- Generated by `python -m innerloop_core.published summary`; do not edit by hand. -->",
      "",
      "Status of every published claim per run profile, read from "
      "`papers/<slug>/results/<profile>/check.json`. `n/a`: the claim does not apply to that "
      "profile. `—`: no check has been run for that profile yet.",
      "",
      "## Overview",
      "",
      *(overview if papers else ["No papers with a published.yaml yet."]),
      *sections,
    ]
  )
  out.write_text(text + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------ CLI
class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:  # argparse default prints usage too: keep it one line
    self.exit(2, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
    prog="python -m innerloop_core.published",
    description="Check reproduced results against published claims.",
  )
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  check = sub.add_parser("check", help="evaluate one paper's claims for one profile")
  check.add_argument("--paper", required=True, type=Path, help="paper dir holding published.yaml")
  check.add_argument("--profile", required=True, choices=PROFILES)
  check.add_argument(
    "--results", type=Path, help="results dir (default: <paper>/results/<profile>)"
  )
  check.add_argument(
    "--strict",
    action="store_true",
    help="exit 1 if a claim FAILs or a claim for this profile is NOT RUN",
  )
  summary = sub.add_parser("summary", help="write REPRODUCTION.md for all papers")
  summary.add_argument("--root", type=Path, default=Path("."))
  summary.add_argument("--out", type=Path, help="default: <root>/REPRODUCTION.md")
  validate = sub.add_parser("validate", help="validate published.yaml files")
  validate.add_argument("files", nargs="+", type=Path)
  return parser


def main(argv: list[str] | None = None) -> int:
  """CLI entry point; returns the exit code (0 ok, 1 strict failure, 2 bad input)."""
  args = _build_parser().parse_args(argv)
  try:
    if args.command == "check":
      pub = load_published(args.paper / "published.yaml")
      results_dir = args.results or args.paper / "results" / args.profile
      report = evaluate(pub, results_dir, args.profile)
      write_report(report, args.paper / CHECK_DIR / args.profile)
      print(render_markdown(report), end="")
      return 1 if args.strict and strict_failures(report) else 0
    if args.command == "summary":
      write_reproduction_summary(args.root, args.out or args.root / "REPRODUCTION.md")
      return 0
    errors = 0
    for f in args.files:
      try:
        pub = load_published(f)
        print(f"ok {f} ({len(pub.claims)} claims)")
      except PublishedSchemaError as e:
        print(str(e), file=sys.stderr)
        errors += 1
    return 2 if errors else 0
  except (PublishedSchemaError, ValueError, OSError) as e:
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  raise SystemExit(main())
