"""End to end: the tiny profile of every paper through the real `dvc repro` in a copy."""

import json
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT_DIRS = ("results", "figures", "check", "runs")
PAPERS = sorted(p.parent.name for p in ROOT.glob("papers/*/published.yaml"))
ENV = {
  **os.environ,
  "DVC_NO_ANALYTICS": "1",
  "INNERLOOP_PLAIN_LOGS": "1",
  "DVC_SITE_CACHE_DIR": "/tmp/innerloop-dvc-site-cache",
}


def _copy_tracked_tree(dst: pathlib.Path) -> None:
  """Copies what a fresh clone holds (tracked and new, non-ignored files) plus .dvc/."""
  files = subprocess.run(
    ["git", "ls-files", "-co", "--exclude-standard"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.split()
  for rel in files:
    src = ROOT / rel
    parts = rel.split("/")
    if parts[0] == "papers" and len(parts) > 2 and parts[2] in OUTPUT_DIRS:
      continue  # pipeline outputs: the copy must produce its own
    if src.is_file():
      (dst / rel).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dst / rel)
  subprocess.run(["git", "init", "-q"], cwd=dst, check=True)


@pytest.mark.slow
@pytest.mark.parametrize("slug", PAPERS)
def test_tiny_profile_through_dvc_repro(tmp_path, slug):
  _copy_tracked_tree(tmp_path)
  params = tmp_path / "papers" / slug / "params.yaml"
  params.write_text(params.read_text().replace("profile: cpu", "profile: tiny"))
  assert yaml.safe_load(params.read_text())["profile"] == "tiny"
  # The copy's own code, with the workspace's installed dependencies.
  env = {
    **ENV,
    "PATH": f"{ROOT / '.venv' / 'bin'}:{ENV['PATH']}",
    "PYTHONPATH": ":".join(str(p) for p in sorted(tmp_path.glob("*/*/src"))),
  }
  dvc = [str(ROOT / ".venv" / "bin" / "dvc")] if (ROOT / ".venv/bin/dvc").exists() else ["dvc"]
  run = subprocess.run(
    [*dvc, "repro", slug], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
  )
  assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
  paper = tmp_path / "papers" / slug
  report = json.loads((paper / "check" / "tiny" / "check.json").read_text())
  rows = report["claims"]
  tiny_rows = [r for r in rows if r["applies"]]
  assert tiny_rows, "the tiny profile must check at least one claim"
  assert all(r["status"] == "PASS" for r in tiny_rows), tiny_rows
  assert any((paper / "figures" / "tiny").glob("*.png"))
  # Nothing changed: a second repro does no work.
  again = subprocess.run(
    [*dvc, "repro", slug], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
  )
  assert again.returncode == 0, again.stderr
  assert "Running stage" not in again.stdout, again.stdout
