"""`python -m innerloop_least_control train|figures|check|all --profile tiny|cpu|full`."""

import pathlib

from innerloop_core import cli
from innerloop_least_control import figures, pipeline
from innerloop_least_control.config import PROFILES

PAPER = cli.Paper(
  slug="least-control",
  root=pathlib.Path(__file__).resolve().parents[2],
  profiles=PROFILES,
  train=pipeline.train_all,
  figures=figures.render_all,
)

if __name__ == "__main__":
  raise SystemExit(cli.main(PAPER))
