"""`python -m innerloop_online_lru train|figures|check|all --profile tiny|cpu|full`."""

import pathlib

from innerloop_core import cli
from innerloop_online_lru import figures, pipeline
from innerloop_online_lru.config import PROFILES

PAPER = cli.Paper(
  slug="online-lru",
  root=pathlib.Path(__file__).resolve().parents[2],
  profiles=PROFILES,
  train=pipeline.train_all,
  figures=figures.render_all,
)

if __name__ == "__main__":
  raise SystemExit(cli.main(PAPER))
