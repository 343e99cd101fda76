"""`python -m innerloop_mesa_optimization train|figures|check|all --profile tiny|cpu|full`."""

import pathlib

from innerloop_core import cli
from innerloop_mesa_optimization import figures, pipeline
from innerloop_mesa_optimization.config import PROFILES

PAPER = cli.Paper(
  slug="mesa-optimization",
  root=pathlib.Path(__file__).resolve().parents[2],
  profiles=PROFILES,
  train=pipeline.train_all,
  figures=figures.render_all,
)

if __name__ == "__main__":
  raise SystemExit(cli.main(PAPER))
