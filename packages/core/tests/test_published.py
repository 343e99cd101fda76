"""Tests for the published-results check (innerloop_core.published)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from innerloop_core.published import (
  FAIL,
  NOT_RUN,
  PASS,
  UNKNOWN,
  CheckReport,
  ClaimResult,
  PublishedSchemaError,
  evaluate,
  load_published,
  main,
  render_markdown,
  write_report,
  write_reproduction_summary,
)

PAPER = {"slug": "toy", "title": "A toy paper", "citation": "Doe et al., 2024"}


def make_claim(**overrides: Any) -> dict[str, Any]:
  """A valid abs_tol claim on m.json:a.loss with published 1.0; overrides replace top-level fields."""
  claim = {
    "id": "c1",
    "source": "Fig 1",
    "statement": "The loss reaches one.",
    "profiles": ["tiny", "cpu"],
    "metric": {"file": "m.json", "key": "a.loss", "aggregate": "mean", "definition": "test loss"},
    "published": {"value": 1.0, "how": "text"},
    "check": {"kind": "abs_tol", "tol": 0.1},
  }
  claim.update(copy.deepcopy(overrides))
  return claim


def write_paper(root: Path, claims: list[dict[str, Any]], paper: dict[str, str] = PAPER) -> Path:
  root.mkdir(parents=True, exist_ok=True)
  path = root / "published.yaml"
  path.write_text(
    yaml.safe_dump({"paper": paper, "claims": claims}, sort_keys=False, allow_unicode=True)
  )
  return path


def write_results(results_dir: Path, files: dict[str, Any]) -> Path:
  results_dir.mkdir(parents=True, exist_ok=True)
  for name, data in files.items():
    (results_dir / name).write_text(json.dumps(data))
  return results_dir


def check_one(
  tmp_path: Path, claim: dict[str, Any], files: dict[str, Any], profile: str = "cpu"
) -> ClaimResult:
  pub = load_published(write_paper(tmp_path, [claim]))
  report = evaluate(pub, write_results(tmp_path / "results" / profile, files), profile)
  assert len(report.rows) == 1
  return report.rows[0]


def loss(value: Any, **extra: Any) -> dict[str, Any]:
  return {"m.json": {"a": {"loss": value, **extra}}}


# ---------------------------------------------------------------------------- check kinds
CURVE_PUB = [[1.0, 10.0], [3.0, 6.0]]
CURVE = {"x": [0.0, 2.0, 4.0], "y": [12.0, 8.0, 4.0]}  # interpolates to 10 at x=1, 6 at x=3


@pytest.mark.parametrize(
  ("check", "published", "value", "status"),
  [
    ({"kind": "abs_tol", "tol": 0.5}, 1.0, 1.5, PASS),  # bound is inclusive
    ({"kind": "abs_tol", "tol": 0.5}, 1.0, 1.75, FAIL),
    ({"kind": "abs_tol", "tol": 0.5}, 1.0, 0.25, FAIL),
    ({"kind": "rel_tol", "tol": 0.1}, 2.0, 2.1, PASS),
    ({"kind": "rel_tol", "tol": 0.1}, 2.0, 1.7, FAIL),
    ({"kind": "rel_tol", "tol": 0.1, "reference": {"value": 4.0}}, 2.0, 4.2, PASS),
    ({"kind": "rel_tol", "tol": 0.1, "reference": {"value": 4.0}}, 2.0, 2.0, FAIL),
    ({"kind": "interval", "low": 0.5, "high": 1.5}, None, 1.0, PASS),
    ({"kind": "interval", "low": 0.5, "high": 1.5}, None, 1.6, FAIL),
    ({"kind": "interval", "low": 0.5}, None, 100.0, PASS),
    ({"kind": "interval", "low": 0.5}, None, 0.4, FAIL),
    ({"kind": "interval", "high": 0.5}, None, -3.0, PASS),
    ({"kind": "interval", "high": 0.5}, None, 0.6, FAIL),
    ({"kind": "threshold", "op": "<", "value": 0.5}, None, 0.4, PASS),
    ({"kind": "threshold", "op": "<", "value": 0.5}, None, 0.5, FAIL),
    ({"kind": "threshold", "op": "<=", "value": 0.5}, None, 0.5, PASS),
    ({"kind": "threshold", "op": ">", "value": 0.5}, None, 0.4, FAIL),
    ({"kind": "threshold", "op": ">=", "value": 0.5}, None, 0.5, PASS),
    ({"kind": "threshold", "op": "<="}, 1.0, 0.9, PASS),  # against published.value
    ({"kind": "threshold", "op": "<="}, 1.0, 1.1, FAIL),
  ],
)
def test_scalar_kinds(
  tmp_path: Path, check: dict, published: float | None, value: float, status: str
) -> None:
  pub = {"value": published, "how": "unknown" if published is None else "table"}
  row = check_one(tmp_path, make_claim(check=check, published=pub), loss(value))
  assert row.status == status, row
  assert row.reason  # PASS and FAIL both explain the measured gap


@pytest.mark.parametrize(
  ("values", "op", "status"),
  [
    ((1.0, 2.0, 3.0), "<", PASS),
    ((1.0, 3.0, 2.0), "<", FAIL),
    ((3.0, 2.0, 1.0), ">", PASS),
    ((3.0, 3.0, 1.0), ">", FAIL),
  ],
)
def test_ordering(tmp_path: Path, values: tuple[float, ...], op: str, status: str) -> None:
  check = {
    "kind": "ordering",
    "op": op,
    "order": [
      {"key": "b.loss", "label": "gd"},
      {"key": "c", "file": "other.json", "label": "ridge"},
    ],
  }
  claim = make_claim(check=check, published={"value": None, "how": "unknown"})
  files = {
    "m.json": {"a": {"loss": values[0]}, "b": {"loss": values[1]}},
    "other.json": {"c": values[2]},
  }
  row = check_one(tmp_path, claim, files)
  assert row.status == status
  assert row.tolerance == f"a.loss {op} gd {op} ridge"
  assert "gd: " in row.reproduced and "ridge: " in row.reproduced
  if status == FAIL:
    assert "not" in row.reason


@pytest.mark.parametrize(
  ("check", "curve", "status"),
  [
    ({"kind": "curve", "tol": 0.01}, CURVE, PASS),
    (
      {"kind": "curve", "tol": 0.4},
      {"x": [0.0, 2.0, 4.0], "y": [12.0, 8.0, 5.0]},
      FAIL,
    ),  # Δ = 0.5 at x=3
    (
      {"kind": "curve", "tol": 0.1, "relative": True},
      {"x": [0.0, 2.0, 4.0], "y": [12.0, 8.0, 5.0]},
      PASS,
    ),
    (
      {"kind": "curve", "tol": 0.05, "relative": True},
      {"x": [0.0, 2.0, 4.0], "y": [12.0, 8.0, 5.0]},
      FAIL,
    ),
    (
      {"kind": "curve", "tol": 0.01},
      {"x": [0.0, 2.0, 4.0], "y": [[12.0, 8.0, 4.0], [12.0, 8.0, 4.0]]},
      PASS,
    ),
    (
      {"kind": "curve", "tol": 0.01},
      {"x": [0.0, 2.0], "y": [12.0, 8.0]},
      FAIL,
    ),  # too short: x=3 outside
  ],
)
def test_curve(tmp_path: Path, check: dict, curve: dict, status: str) -> None:
  claim = make_claim(check=check, published={"value": CURVE_PUB, "how": "figure_estimate"})
  row = check_one(tmp_path, claim, {"m.json": {"a": {"loss": curve}}})
  assert row.status == status, row
  assert row.published == "2-point curve (figure estimate)"


def test_curve_out_of_range_names_the_points(tmp_path: Path) -> None:
  claim = make_claim(
    check={"kind": "curve", "tol": 1.0}, published={"value": CURVE_PUB, "how": "figure_estimate"}
  )
  row = check_one(tmp_path, claim, {"m.json": {"a": {"loss": {"x": [0.0, 2.0], "y": [12.0, 8.0]}}}})
  assert row.status == FAIL and "outside reproduced range" in row.reason


def test_curve_per_seed(tmp_path: Path) -> None:
  claim = make_claim(
    check={"kind": "curve", "tol": 0.01, "min_fraction": 0.5},
    metric={"file": "m.json", "key": "a.loss", "aggregate": "per_seed", "definition": "d"},
    published={"value": CURVE_PUB, "how": "figure_estimate"},
  )
  good, bad = [12.0, 8.0, 4.0], [12.0, 9.0, 4.0]
  row = check_one(
    tmp_path, claim, {"m.json": {"a": {"loss": {"x": [0.0, 2.0, 4.0], "y": [good, bad]}}}}
  )
  assert row.status == PASS and "1/2 seeds pass" in row.reason and "seed 1" in row.reason


def test_curve_wrong_structure_is_not_run(tmp_path: Path) -> None:
  claim = make_claim(
    check={"kind": "curve", "tol": 0.01}, published={"value": CURVE_PUB, "how": "figure_estimate"}
  )
  row = check_one(tmp_path, claim, loss([1.0, 2.0]))
  assert row.status == NOT_RUN and '"x"' in row.reason


# ------------------------------------------------------------------- aggregates and seeds
@pytest.mark.parametrize(
  ("aggregate", "expected"), [("mean", 4.0), ("median", 2.0), ("min", 1.0), ("max", 9.0)]
)
def test_aggregates(tmp_path: Path, aggregate: str, expected: float) -> None:
  claim = make_claim(
    metric={"file": "m.json", "key": "a.loss", "aggregate": aggregate, "definition": "d"},
    check={"kind": "abs_tol", "tol": 1e-9},
    published={"value": expected, "how": "code"},
  )
  row = check_one(tmp_path, claim, loss([1.0, 2.0, 9.0]))
  assert row.status == PASS
  assert row.reproduced == f"{expected:.4g} ({aggregate} of 3)"


@pytest.mark.parametrize(("min_fraction", "status"), [(0.6, PASS), (0.7, FAIL), (None, FAIL)])
def test_per_seed_min_fraction(tmp_path: Path, min_fraction: float | None, status: str) -> None:
  check = {"kind": "abs_tol", "tol": 0.1}
  if min_fraction is not None:
    check["min_fraction"] = min_fraction
  claim = make_claim(
    check=check,
    metric={"file": "m.json", "key": "a.loss", "aggregate": "per_seed", "definition": "d"},
  )
  row = check_one(tmp_path, claim, loss([1.0, 1.05, 2.0]))
  assert row.status == status
  assert row.reproduced == "[1, 1.05, 2]"
  assert "2/3 seeds pass" in row.reason and "seed 2" in row.reason


def test_per_seed_two_thirds_is_not_lost_to_rounding(tmp_path: Path) -> None:
  check = {"kind": "abs_tol", "tol": 0.1, "min_fraction": 2 / 3}
  claim = make_claim(
    check=check,
    metric={"file": "m.json", "key": "a.loss", "aggregate": "per_seed", "definition": "d"},
  )
  assert check_one(tmp_path, claim, loss([1.0, 1.0, 5.0])).status == PASS


# --------------------------------------------------------------------------- references
def test_reference_to_other_metric(tmp_path: Path) -> None:
  check = {"kind": "rel_tol", "tol": 0.05, "reference": {"key": "gd.loss", "label": "GD"}}
  claim = make_claim(check=check, published={"value": None, "how": "unknown"})
  row = check_one(tmp_path, claim, {"m.json": {"a": {"loss": 1.02}, "gd": {"loss": 1.0}}})
  assert row.status == PASS  # the unknown published value does not matter with a reference
  assert "GD: 1" in row.reproduced and row.tolerance == "±5% of GD"
  row = check_one(tmp_path, claim, {"m.json": {"a": {"loss": 1.2}, "gd": {"loss": 1.0}}})
  assert row.status == FAIL


def test_reference_in_other_file_with_own_aggregate(tmp_path: Path) -> None:
  check = {
    "kind": "threshold",
    "op": "<",
    "reference": {"key": "loss", "file": "base.json", "aggregate": "min"},
  }
  claim = make_claim(check=check, published={"value": None, "how": "unknown"})
  files = {"m.json": {"a": {"loss": [0.5, 0.7]}}, "base.json": {"loss": [0.65, 3.0]}}
  assert check_one(tmp_path, claim, files).status == PASS  # mean 0.6 < min 0.65
  files["base.json"]["loss"] = [0.55, 3.0]
  assert check_one(tmp_path, claim, files).status == FAIL


def test_per_seed_reference_is_paired_by_seed(tmp_path: Path) -> None:
  check = {"kind": "threshold", "op": "<", "reference": {"key": "gd.loss"}}
  claim = make_claim(
    check=check,
    metric={"file": "m.json", "key": "a.loss", "aggregate": "per_seed", "definition": "d"},
  )
  files = {"m.json": {"a": {"loss": [1.0, 5.0]}, "gd": {"loss": [2.0, 6.0]}}}
  assert check_one(tmp_path, claim, files).status == PASS  # 5 > 2 but seed-paired 5 < 6
  files["m.json"]["gd"]["loss"] = [2.0, 6.0, 7.0]
  row = check_one(tmp_path, claim, files)
  assert row.status == FAIL and "seed counts differ" in row.reason


def test_missing_reference_is_not_run(tmp_path: Path) -> None:
  claim = make_claim(check={"kind": "abs_tol", "tol": 0.1, "reference": {"key": "gd.loss"}})
  row = check_one(tmp_path, claim, loss(1.0))
  assert row.status == NOT_RUN and "gd.loss" in row.reason


# ----------------------------------------------------------------- NOT RUN / UNKNOWN / NaN
def test_missing_file_is_not_run(tmp_path: Path) -> None:
  row = check_one(tmp_path, make_claim(), {"other.json": {}})
  assert row.status == NOT_RUN and row.applies
  assert "missing file m.json" in row.reason and row.reproduced == "—"


def test_missing_key_is_not_run(tmp_path: Path) -> None:
  row = check_one(tmp_path, make_claim(), {"m.json": {"a": {"acc": 1.0}}})
  assert row.status == NOT_RUN
  assert "missing key a.loss in m.json" in row.reason and "'loss'" in row.reason


def test_invalid_json_is_not_run(tmp_path: Path) -> None:
  pub = load_published(write_paper(tmp_path, [make_claim()]))
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "m.json").write_text("{not json")
  row = evaluate(pub, tmp_path / "r", "cpu").rows[0]
  assert row.status == NOT_RUN and "cannot read m.json" in row.reason


def test_wrong_type_is_not_run(tmp_path: Path) -> None:
  row = check_one(tmp_path, make_claim(), loss("0.5"))
  assert row.status == NOT_RUN and "str" in row.reason


def test_list_index_in_key(tmp_path: Path) -> None:
  claim = make_claim(metric={"file": "m.json", "key": "runs.1.loss", "definition": "d"})
  assert (
    check_one(tmp_path, claim, {"m.json": {"runs": [{"loss": 9.0}, {"loss": 1.0}]}}).status == PASS
  )


def test_profile_not_in_claim_is_not_run(tmp_path: Path) -> None:
  row = check_one(tmp_path, make_claim(profiles=["full"]), loss(1.0), profile="tiny")
  assert row.status == NOT_RUN and not row.applies
  assert "not in profile tiny" in row.reason


def test_unknown_published_value(tmp_path: Path) -> None:
  claim = make_claim(published={"value": None, "how": "unknown"})
  row = check_one(tmp_path, claim, loss(1.05))
  assert row.status == UNKNOWN
  assert row.reproduced == "1.05" and row.published == "unknown"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, [1.0, float("nan")]])
def test_non_finite_fails(tmp_path: Path, bad: Any) -> None:
  claim = make_claim(check={"kind": "interval", "low": 0.0})
  row = check_one(tmp_path, claim, loss(bad))
  assert row.status == FAIL and "non-finite" in row.reason


def test_non_finite_beats_unknown_published(tmp_path: Path) -> None:
  row = check_one(
    tmp_path, make_claim(published={"value": None, "how": "unknown"}), loss(float("nan"))
  )
  assert row.status == FAIL


def test_non_finite_seed_counts_as_failing_seed(tmp_path: Path) -> None:
  claim = make_claim(
    check={"kind": "abs_tol", "tol": 0.1, "min_fraction": 0.5},
    metric={"file": "m.json", "key": "a.loss", "aggregate": "per_seed", "definition": "d"},
  )
  row = check_one(tmp_path, claim, loss([1.0, float("nan")]))
  assert row.status == PASS and "seed 1: non-finite" in row.reason
  row = check_one(tmp_path, claim, loss([float("nan"), float("nan")]))
  assert row.status == FAIL


@pytest.mark.parametrize(
  "check", [{"kind": "abs_tol", "tol": 0.1}, {"kind": "threshold", "op": "<"}]
)
def test_non_finite_reference_fails(tmp_path: Path, check: dict[str, Any]) -> None:
  # 1.0 < inf is True in IEEE arithmetic; a diverged baseline must still not make the claim pass.
  claim = make_claim(check={**check, "reference": {"key": "gd.loss"}})
  row = check_one(tmp_path, claim, {"m.json": {"a": {"loss": 1.0}, "gd": {"loss": float("inf")}}})
  assert row.status == FAIL and "non-finite" in row.reason


def test_every_claim_gets_a_row(tmp_path: Path) -> None:
  claims = [
    make_claim(id="a"),
    make_claim(id="b", profiles=["full"]),
    make_claim(id="c", metric={"file": "gone.json", "key": "k", "definition": "d"}),
  ]
  report = evaluate(
    load_published(write_paper(tmp_path, claims)), write_results(tmp_path / "r", loss(1.0)), "cpu"
  )
  assert [r.id for r in report.rows] == ["a", "b", "c"]
  assert [r.status for r in report.rows] == [PASS, NOT_RUN, NOT_RUN]
  assert report.counts == {PASS: 1, FAIL: 0, NOT_RUN: 2, UNKNOWN: 0}


def test_evaluate_rejects_unknown_profile(tmp_path: Path) -> None:
  with pytest.raises(ValueError, match="profile"):
    evaluate(load_published(write_paper(tmp_path, [make_claim()])), tmp_path, "gpu")


# ------------------------------------------------------------------------ schema errors
def schema_error(
  tmp_path: Path, claims: list[dict[str, Any]] | None = None, raw: str | None = None
) -> str:
  path = tmp_path / "published.yaml"
  if raw is not None:
    path.write_text(raw)
  else:
    write_paper(tmp_path, claims or [])
  with pytest.raises(PublishedSchemaError) as info:
    load_published(path)
  msg = str(info.value)
  assert "\n" not in msg and str(path) in msg
  return msg


def with_check(**check: Any) -> dict[str, Any]:
  return make_claim(id="bad-claim", check=check)


@pytest.mark.parametrize(
  ("claim", "fragments"),
  [
    (
      make_claim(id="bad-claim", colour="red"),
      ["'bad-claim'", "'colour'", "allowed:", "statement"],
    ),
    (
      with_check(kind="abs_tol", tol=0.1, tolerance=0.1),
      ["'bad-claim'", "check", "'tolerance'", "tol"],
    ),
    (with_check(kind="close_enough", tol=0.1), ["'bad-claim'", "check", "close_enough", "rel_tol"]),
    (with_check(tol=0.1), ["'bad-claim'", "check", "kind", "abs_tol"]),
    (with_check(kind="rel_tol"), ["'bad-claim'", "check.tol", "required"]),
    (with_check(kind="abs_tol", tol="0.1"), ["check.tol", "number"]),
    (with_check(kind="abs_tol", tol=-1), ["check.tol", "greater than or equal"]),
    (with_check(kind="interval"), ["'bad-claim'", "check", "low", "high"]),
    (with_check(kind="interval", low=2, high=1), ["check", "low"]),
    (with_check(kind="threshold", op="<", value=1, reference={"value": 2}), ["check", "not both"]),
    (with_check(kind="threshold", op="!=", value=1), ["check.op", "'<'"]),
    (with_check(kind="ordering", op="<", order=[]), ["check.order", "at least 1"]),
    (
      with_check(kind="ordering", op="<", order=[{"key": "b", "lable": "x"}]),
      ["check.order[0]", "'lable'"],
    ),
    (
      with_check(kind="abs_tol", tol=0.1, reference={"key": "b", "value": 1}),
      ["check.reference", "exactly one"],
    ),
    (with_check(kind="abs_tol", tol=0.1, min_fraction=0.5), ["min_fraction", "per_seed"]),
    (with_check(kind="curve", tol=0.1), ["curve", "published.value"]),
    (
      make_claim(id="bad-claim", published={"value": 0.2, "how": "unknown"}),
      ["published", "how", "null"],
    ),
    (
      make_claim(id="bad-claim", published={"value": None, "how": "text"}),
      ["published", "how", "unknown"],
    ),
    (
      make_claim(id="bad-claim", published={"value": "0.2", "how": "text"}),
      ["published.value", "number"],
    ),
    (
      make_claim(id="bad-claim", published={"value": 1, "how": "guess"}),
      ["published.how", "figure_estimate"],
    ),
    (make_claim(id="bad-claim", profiles=["gpu"]), ["profiles[0]", "'tiny'"]),
    (make_claim(id="bad-claim", profiles=["cpu", "cpu"]), ["profiles", "repeat"]),
    (make_claim(id="Bad_Claim"), ["'Bad_Claim'", "id", "pattern"]),
    (
      make_claim(id="bad-claim", metric={"file": "../x.json", "key": "k", "definition": "d"}),
      ["metric.file"],
    ),
    (
      make_claim(id="bad-claim", metric={"file": "m.json", "key": "a..b", "definition": "d"}),
      ["metric.key"],
    ),
    (
      make_claim(
        id="bad-claim", metric={"file": "m.json", "key": "k", "aggregate": "sum", "definition": "d"}
      ),
      ["metric.aggregate", "per_seed"],
    ),
    (
      make_claim(id="bad-claim", metric={"file": "m.json", "key": "k"}),
      ["metric.definition", "required"],
    ),
  ],
)
def test_schema_errors_name_the_field(
  tmp_path: Path, claim: dict[str, Any], fragments: list[str]
) -> None:
  msg = schema_error(tmp_path, [claim])
  for fragment in fragments:
    assert fragment in msg, (fragment, msg)


def test_duplicate_ids(tmp_path: Path) -> None:
  msg = schema_error(tmp_path, [make_claim(id="twice"), make_claim(id="twice")])
  assert "duplicate claim id 'twice'" in msg


def test_no_claims(tmp_path: Path) -> None:
  assert "claims" in schema_error(tmp_path, [])


def test_claim_named_by_position_when_id_missing(tmp_path: Path) -> None:
  claim = make_claim()
  del claim["id"]
  assert "claim #1: id" in schema_error(tmp_path, [claim])


def test_bad_yaml_and_top_level(tmp_path: Path) -> None:
  assert "YAML error at line" in schema_error(tmp_path, raw="paper: [unclosed\n")
  assert "mapping" in schema_error(tmp_path, raw="- just a list\n")
  assert "paper.title" in schema_error(
    tmp_path,
    raw=yaml.safe_dump({"paper": {"slug": "x", "citation": "c"}, "claims": [make_claim()]}),
  )


def test_valid_full_example_loads(tmp_path: Path) -> None:
  claims = [
    make_claim(
      id="a",
      seeds=2,
      deviation="stand-in data",
      published={"value": 0.2, "how": "text", "precision": "≈", "quote": "identical loss"},
    ),
    make_claim(
      id="b",
      check={"kind": "curve", "tol": 0.1, "relative": True},
      published={"value": CURVE_PUB, "how": "figure_estimate"},
    ),
    make_claim(id="c", check={"kind": "ordering", "op": ">", "order": [{"key": "x"}]}),
  ]
  pub = load_published(write_paper(tmp_path, claims))
  assert [c.id for c in pub.claims] == ["a", "b", "c"] and pub.paper.slug == "toy"
  assert pub.claims[1].published.value == [(1.0, 10.0), (3.0, 6.0)]


# ---------------------------------------------------------------------------- reports
def sample_report(tmp_path: Path) -> CheckReport:
  claims = [
    make_claim(id="a", statement="x | y", deviation="smaller model"),
    make_claim(id="b", check={"kind": "abs_tol", "tol": 0.01}),
    make_claim(id="c", profiles=["full"]),
  ]
  pub = load_published(write_paper(tmp_path / "paper", claims))
  return evaluate(pub, write_results(tmp_path / "paper" / "results" / "cpu", loss(1.05)), "cpu")


def test_check_json_is_deterministic(tmp_path: Path) -> None:
  out = tmp_path / "paper" / "results" / "cpu"
  write_report(sample_report(tmp_path), out)
  first = (out / "check.json").read_bytes()
  write_report(sample_report(tmp_path), out)
  assert (out / "check.json").read_bytes() == first
  data = json.loads(first)
  assert data["profile"] == "cpu" and data["counts"][PASS] == 1 and data["counts"][FAIL] == 1
  assert [c["id"] for c in data["claims"]] == ["a", "b", "c"]
  assert list(data) == sorted(data) and list(data["claims"][0]) == sorted(data["claims"][0])


def test_markdown_has_one_row_per_claim(tmp_path: Path) -> None:
  report = sample_report(tmp_path)
  md = render_markdown(report)
  rows = [line for line in md.splitlines() if line.startswith("| `")]
  assert len(rows) == len(report.rows) == 3
  assert md.count("| Claim | Source | Published | Reproduced | Tolerance | Status | Notes |") == 1
  assert all(row.count(" | ") == 6 for row in rows)  # the "x | y" statement is escaped
  assert "x \\| y" in rows[0] and "smaller model" in rows[0] and "**PASS**" in rows[0]
  assert "**FAIL**" in rows[1] and "±0.01 of published" in rows[1]
  write_report(report, tmp_path / "out")
  assert (tmp_path / "out" / "check.md").read_text() == md


def test_reproduction_summary(tmp_path: Path) -> None:
  root = tmp_path / "repo"
  write_paper(
    root / "papers" / "beta",
    [make_claim(id="only-full", profiles=["full"])],
    paper={**PAPER, "slug": "beta", "title": "Beta paper"},
  )
  alpha = root / "papers" / "alpha"
  write_paper(
    alpha,
    [
      make_claim(id="good"),
      make_claim(id="bad", check={"kind": "abs_tol", "tol": 0.01}),
      make_claim(id="later", profiles=["full"]),
    ],
    paper={**PAPER, "slug": "alpha", "title": "Alpha paper"},
  )
  results = write_results(alpha / "results" / "cpu", loss(1.05))
  write_report(
    evaluate(load_published(alpha / "published.yaml"), results, "cpu"), alpha / "check" / "cpu"
  )

  out = root / "REPRODUCTION.md"
  write_reproduction_summary(root, out)
  text = out.read_text()
  assert text.index("## alpha") < text.index("## beta")  # sorted, so output is stable
  assert "| [alpha](papers/alpha) | 3 | — | 1/2 PASS | — |" in text
  assert "| [beta](papers/beta) | 1 | n/a | n/a | — |" in text
  assert "| `good` | Fig 1 | The loss reaches one. | — | PASS | n/a |" in text
  assert "| `bad` | Fig 1 | The loss reaches one. | — | FAIL | n/a |" in text
  assert "| `later` | Fig 1 | The loss reaches one. | n/a | n/a | — |" in text
  write_reproduction_summary(root, out)
  assert out.read_text() == text


def test_reproduction_summary_without_papers(tmp_path: Path) -> None:
  write_reproduction_summary(tmp_path, tmp_path / "REPRODUCTION.md")
  assert "No papers" in (tmp_path / "REPRODUCTION.md").read_text()


# -------------------------------------------------------------------------------- CLI
def cli_paper(tmp_path: Path, value: float, claims: list[dict[str, Any]] | None = None) -> Path:
  paper = tmp_path / "paper"
  write_paper(paper, claims or [make_claim()])
  write_results(paper / "results" / "cpu", loss(value))
  return paper


@pytest.mark.parametrize(
  ("value", "strict", "code"), [(1.0, True, 0), (5.0, False, 0), (5.0, True, 1)]
)
def test_cli_check_exit_codes(
  tmp_path: Path, capsys: pytest.CaptureFixture[str], value: float, strict: bool, code: int
) -> None:
  paper = cli_paper(tmp_path, value)
  argv = ["check", "--paper", str(paper), "--profile", "cpu"] + (["--strict"] if strict else [])
  assert main(argv) == code
  assert "| `c1`" in capsys.readouterr().out
  assert (paper / "check" / "cpu" / "check.json").is_file()
  assert (paper / "check" / "cpu" / "check.md").is_file()


def test_cli_strict_counts_applicable_not_run_only(tmp_path: Path) -> None:
  claims = [
    make_claim(id="ok"),
    make_claim(id="elsewhere", profiles=["full"]),
    make_claim(id="unknown", published={"value": None, "how": "unknown"}),
  ]
  paper = cli_paper(tmp_path, 1.0, claims)
  assert main(["check", "--paper", str(paper), "--profile", "cpu", "--strict"]) == 0
  claims.append(
    make_claim(id="missing", metric={"file": "none.json", "key": "k", "definition": "d"})
  )
  write_paper(paper, claims)
  assert main(["check", "--paper", str(paper), "--profile", "cpu", "--strict"]) == 1


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
  good = write_paper(tmp_path / "good", [make_claim()])
  bad = write_paper(tmp_path / "bad", [make_claim(check={"kind": "rel_tol"})])
  assert main(["validate", str(good)]) == 0
  assert main(["validate", str(good), str(bad)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "check.tol" in err and str(bad) in err


@pytest.mark.parametrize(
  "argv",
  [
    [],
    ["frobnicate"],
    ["check", "--profile", "cpu"],
    ["check", "--paper", "x", "--profile", "gpu"],
    ["check", "--paper", "/nonexistent/paper", "--profile", "cpu"],
    ["validate"],
    ["validate", "/nonexistent/published.yaml"],
  ],
)
def test_cli_bad_input_is_one_line_exit_2(
  argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
  with pytest.raises(SystemExit) as info:
    raise SystemExit(main(argv))
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_summary(tmp_path: Path) -> None:
  write_paper(tmp_path / "papers" / "toy", [make_claim()])
  assert main(["summary", "--root", str(tmp_path)]) == 0
  assert "## toy" in (tmp_path / "REPRODUCTION.md").read_text()


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
  paper = cli_paper(tmp_path, 5.0)
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "innerloop_core.published",
      "check",
      "--paper",
      str(paper),
      "--profile",
      "cpu",
      "--strict",
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert proc.returncode == 1, proc.stderr
  assert "**FAIL**" in proc.stdout
