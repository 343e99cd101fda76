"""The command line every paper shares: `python -m innerloop_<paper> train|figures|check|all`.

  --profile tiny|cpu|full     which profile (default: cpu)
  --set key=value             override a config field (repeatable, dotted keys)
  --budget-s SECONDS          stop training after this wall-clock time: save, exit 75,
                              and resume on the next call (also INNERLOOP_TIME_BUDGET_S)
  --strict                    check: exit 1 if a claim of this profile is not PASS
  --matmul-precision highest|default
                              float32 matrix products at full float32 (default here) or at
                              the backend's default (TF32 on recent NVIDIA GPUs)

Layout of a paper directory `papers/<slug>/`:
  published.yaml              the paper's claims (see innerloop_core.published)
  results/<profile>/          small JSON results of the train stage (tracked in git)
  check/<profile>/            check.json and check.md of the check stage (tracked in git)
  figures/<profile>/          rendered figures (tracked in git)
  runs/<profile>/             checkpoints and metric logs (DVC cache; resumable)
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from innerloop_core import config as core_config
from innerloop_core import published, runlog
from innerloop_core.checkpoint import CheckpointError
from innerloop_core.train import EXIT_BUDGET, BudgetExhausted, Deadline


@dataclasses.dataclass(frozen=True)
class PaperPaths:
  root: pathlib.Path
  profile: str

  @property
  def results(self) -> pathlib.Path:
    return self.root / "results" / self.profile

  @property
  def figures(self) -> pathlib.Path:
    return self.root / "figures" / self.profile

  @property
  def check(self) -> pathlib.Path:
    return self.root / published.CHECK_DIR / self.profile

  @property
  def runs(self) -> pathlib.Path:
    return self.root / "runs" / self.profile


@dataclasses.dataclass(frozen=True)
class Paper:
  """What a paper plugs into the shared command line."""

  slug: str
  root: pathlib.Path
  profiles: Mapping[str, Any]
  train: Callable[[Any, PaperPaths, Deadline], None]
  figures: Callable[[Any, PaperPaths], None]


def _parser(paper: Paper) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog=f"python -m innerloop_{paper.slug.replace('-', '_')}",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("command", choices=("train", "figures", "check", "all", "show-config"))
  p.add_argument("--profile", default="cpu")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--budget-s", type=float, default=None)
  p.add_argument("--strict", action="store_true")
  p.add_argument("--matmul-precision", choices=("highest", "default"), default="highest")
  p.add_argument(
    "--root",
    type=pathlib.Path,
    default=None,
    help="paper directory (default: the package's papers/<slug>)",
  )
  return p


def _default_root(paper: Paper) -> pathlib.Path:
  """The paper directory: the working directory when it is one (DVC runs stages there with
  wdir papers/<slug>, also in a copy of the repo), else the package's own."""
  cwd = pathlib.Path.cwd()
  if (cwd / "published.yaml").is_file() and cwd.name == paper.slug:
    return cwd
  return paper.root


def run_check(paths: PaperPaths, strict: bool) -> int:
  """Judges every claim, writes check/<profile>/check.{json,md} and the root REPRODUCTION.md."""
  spec = published.load_published(paths.root / "published.yaml")
  report = published.evaluate(spec, paths.results, paths.profile)
  published.write_report(report, paths.check)
  repo_root = paths.root.parent.parent
  if (repo_root / "papers").is_dir():
    published.write_reproduction_summary(repo_root, repo_root / "REPRODUCTION.md")
  update_readme_table(paths, published.render_markdown(report))
  print(published.render_markdown(report))
  return 1 if strict and published.strict_failures(report) else 0


def update_readme_table(paths: PaperPaths, table: str) -> bool:
  """Replaces the block between `<!-- check:<profile> -->` and `<!-- /check:<profile> -->` in
  the paper's README with this check's table, the commit that produced the results and the
  measured train time, so the README always shows the output of the last run."""
  readme = paths.root / "README.md"
  begin, end = f"<!-- check:{paths.profile} -->", f"<!-- /check:{paths.profile} -->"
  if not readme.is_file():
    return False
  text = readme.read_text()
  if begin not in text or end not in text:
    return False
  manifest = _read_optional(paths.results / "manifest.json")
  timing = _read_optional(paths.results / "timing.json")
  git = manifest.get("git", {})
  commit = (git.get("commit") or "unknown")[:10] + (" (dirty tree)" if git.get("dirty") else "")
  devices = ", ".join(manifest.get("devices", [])) or "unknown device"
  seconds = timing.get("train_time_s")
  took = f"{seconds / 60:.1f} min of training" if seconds is not None else "train time unknown"
  header = (
    f"Profile `{paths.profile}`, results from commit `{commit}` on {devices}; "
    f"{took} (resumed runs count only their last slice).\n\n"
  )
  body = table.split("\n", 2)[2] if table.startswith("# ") else table  # drop the H1 title
  head, rest = text.split(begin, 1)
  _, tail = rest.split(end, 1)
  readme.write_text(f"{head}{begin}\n{header}{body.strip()}\n{end}{tail}")
  return True


def _read_optional(path: pathlib.Path) -> dict:
  try:
    return runlog.read_json(path)
  except (OSError, ValueError):
    return {}


def main(paper: Paper, argv: Sequence[str] | None = None) -> int:
  args = _parser(paper).parse_args(argv)
  root = (args.root or _default_root(paper)).absolute()
  try:
    cfg = core_config.apply_overrides(
      core_config.select_profile(paper.profiles, args.profile), args.overrides
    )
  except core_config.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  paths = PaperPaths(root, args.profile)
  if args.matmul_precision == "highest":
    # On an H200 the backend default (TF32) put the exact constructions at ~1e-3 relative
    # error where the claims ask for 1e-5; CPU float32 products are unaffected.
    jax.config.update("jax_default_matmul_precision", "highest")
  if args.command == "show-config":
    print(runlog.json.dumps(core_config.to_dict(cfg), indent=1))
    return 0
  try:
    if args.command in ("train", "all"):
      t0 = time.perf_counter()
      paths.results.mkdir(parents=True, exist_ok=True)
      runlog.write_json(
        paths.results / "manifest.json",
        runlog.manifest(
          {
            "profile": args.profile,
            "overrides": list(args.overrides),
            "matmul_precision": args.matmul_precision,
            "resolved": core_config.to_dict(cfg),
          },
          extra_packages=(f"innerloop-{paper.slug}",),
        ),
      )
      paper.train(cfg, paths, Deadline.from_env(args.budget_s))
      runlog.write_json(
        paths.results / "timing.json", {"train_time_s": round(time.perf_counter() - t0, 1)}
      )
      print(
        f"[{paper.slug}] train ({args.profile}) done in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
      )
    if args.command in ("figures", "all"):
      paper.figures(cfg, paths)
    if args.command in ("check", "all"):
      return run_check(paths, args.strict)
  except BudgetExhausted as e:
    print(f"[{paper.slug}] {e}", file=sys.stderr)
    return EXIT_BUDGET
  except (CheckpointError, core_config.ConfigError, published.PublishedSchemaError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except FileNotFoundError as e:
    print(
      f"error: {e.filename or e} is missing; run the earlier stage first "
      f"(train -> figures -> check)",
      file=sys.stderr,
    )
    return 2
  return 0
