"""`python -m innerloop_gated_rnns_attention train|figures|check|all --profile tiny|cpu|full`."""

import pathlib

from innerloop_core import cli
from innerloop_gated_rnns_attention import figures, pipeline
from innerloop_gated_rnns_attention.config import PROFILES

PAPER = cli.Paper(
  slug="gated-rnns-attention",
  root=pathlib.Path(__file__).resolve().parents[2],
  profiles=PROFILES,
  train=pipeline.train_all,
  figures=figures.render_all,
)

if __name__ == "__main__":
  raise SystemExit(cli.main(PAPER))
