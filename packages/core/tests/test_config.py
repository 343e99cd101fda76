"""Configs: profiles, overrides and the one-line errors for bad input."""

import dataclasses
import enum
import subprocess
import sys

import pytest

from innerloop_core.config import (
  ConfigError,
  added_field,
  apply_overrides,
  fingerprint,
  select_profile,
  to_dict,
)
from innerloop_core.optim import OptimConfig, make_optimizer


class Mode(enum.Enum):
  A = "a"
  B = "b"


@dataclasses.dataclass(frozen=True)
class Inner:
  steps: int = 10
  lr: float = 1e-3
  clip: float | None = None
  sizes: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class Outer:
  name: str = "x"
  flag: bool = False
  mode: Mode = Mode.A
  inner: Inner = Inner()


PROFILES = {"tiny": Outer(), "cpu": Outer(inner=Inner(steps=100))}


def test_select_profile_and_unknown_profile():
  assert select_profile(PROFILES, "cpu").inner.steps == 100
  with pytest.raises(ConfigError, match="unknown profile 'gpu'; allowed: tiny, cpu"):
    select_profile(PROFILES, "gpu")


def test_overrides_parse_with_the_declared_types():
  cfg = apply_overrides(
    Outer(),
    [
      "inner.steps=7",
      "inner.lr=0.5",
      "flag=true",
      "mode=b",
      "inner.clip=none",
      "inner.sizes=3,4,5",
      "name=y",
    ],
  )
  assert cfg == Outer(
    name="y", flag=True, mode=Mode.B, inner=Inner(steps=7, lr=0.5, clip=None, sizes=(3, 4, 5))
  )
  assert apply_overrides(Outer(), ["inner.clip=2.5"]).inner.clip == 2.5


@pytest.mark.parametrize(
  "override, message",
  [
    ("inner.stepz=3", "unknown key 'inner.stepz'; allowed at this level: steps, lr, clip, sizes"),
    ("steps=3", "unknown key 'steps'"),
    ("inner.steps=ten", "inner.steps: expected an int, got 'ten'"),
    ("inner.lr=fast", "inner.lr: expected a float"),
    ("flag=maybe", "flag: expected a bool"),
    ("mode=c", "mode: 'c' is not allowed; allowed: a, b"),
    ("inner=3", "inner is a section; set one of: inner.steps"),
    ("inner.steps", "must look like key=value"),
  ],
)
def test_bad_overrides_are_one_line_errors(override, message):
  with pytest.raises(ConfigError) as e:
    apply_overrides(Outer(), [override])
  assert message in str(e.value) and "\n" not in str(e.value)


def test_fingerprint_tracks_every_field():
  assert fingerprint(Outer()) == fingerprint(Outer())
  assert fingerprint(Outer()) != fingerprint(apply_overrides(Outer(), ["inner.lr=0.002"]))
  assert to_dict(Outer())["mode"] == "a"


@dataclasses.dataclass(frozen=True)
class OuterBefore:
  """``Outer`` as it was before a field was added."""

  steps: int = 10


@dataclasses.dataclass(frozen=True)
class OuterAfter:
  steps: int = 10
  decay: float = added_field(0.0)


def test_added_field_keeps_old_fingerprints_at_its_default():
  # Checkpoints written before the field existed still resume when it is at its default...
  assert fingerprint(OuterAfter()) == fingerprint(OuterBefore())
  # ...but any other value is a different config, and to_dict still shows the field.
  assert fingerprint(OuterAfter(decay=0.5)) != fingerprint(OuterBefore())
  assert to_dict(OuterAfter())["decay"] == 0.0
  assert apply_overrides(OuterAfter(), ["decay=0.25"]).decay == 0.25


def test_optimizer_rejects_bad_values():
  with pytest.raises(ConfigError, match="optim.learning_rate"):
    make_optimizer(OptimConfig(learning_rate=0.0), 10)
  with pytest.raises(ConfigError, match="optim.clip_elementwise"):
    make_optimizer(OptimConfig(clip_elementwise=-1.0), 10)


@pytest.mark.parametrize(
  "args, message",
  [
    (["train", "--profile", "gpu"], "error: unknown profile 'gpu'; allowed: tiny, cpu, full"),
    (["train", "--set", "fig2.stepz=1"], "error: unknown key 'fig2.stepz'"),
    (["train", "--set", "fig2.steps=many"], "error: fig2.steps: expected an int, got 'many'"),
  ],
)
def test_paper_cli_bad_input_is_one_line(args, message):
  r = subprocess.run(
    [sys.executable, "-m", "innerloop_icl_gd", *args], capture_output=True, text=True, timeout=120
  )
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [r.stderr.strip()] and message in r.stderr
  assert "Traceback" not in r.stderr
