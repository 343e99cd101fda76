"""Every papers/*/published.yaml in the repo must satisfy the published-results schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from innerloop_core.published import load_published

REPO = Path(__file__).resolve().parents[1]
FILES = sorted(REPO.glob("papers/*/published.yaml"))


@pytest.mark.parametrize("path", FILES, ids=[p.parent.name for p in FILES])
def test_published_yaml_is_valid(path: Path) -> None:
  pub = load_published(path)  # raises PublishedSchemaError naming file, claim and field
  # The slug keys REPRODUCTION.md and the results paths, so it must match the directory.
  assert pub.paper.slug == path.parent.name


def test_schema_loader_accepts_minimal_example(tmp_path: Path) -> None:
  # Keeps this module meaningful before any paper has a published.yaml.
  claim = {
    "id": "fig1-loss",
    "source": "Fig 1",
    "statement": "Loss goes down.",
    "profiles": ["cpu"],
    "metric": {"file": "fig1.json", "key": "loss", "aggregate": "mean", "definition": "test MSE"},
    "published": {"value": None, "how": "unknown"},
    "check": {"kind": "threshold", "op": "<", "reference": {"key": "baseline"}},
  }
  path = tmp_path / "published.yaml"
  path.write_text(
    yaml.safe_dump({"paper": {"slug": "example", "title": "T", "citation": "C"}, "claims": [claim]})
  )
  assert [c.id for c in load_published(path).claims] == ["fig1-loss"]
