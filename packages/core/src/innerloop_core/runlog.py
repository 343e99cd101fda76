"""Run records: progress display, JSONL metrics, JSON files and the run manifest.

On a terminal the progress is a tqdm bar; elsewhere (CI, DVC, nohup) plain log lines are
printed every `log_every_s` seconds with steps/s and the ETA, so logs stay readable.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if hasattr(x, "tolist"):  # numpy / jax arrays and scalars
    return _jsonable(np.asarray(x).tolist())
  if isinstance(x, float) and not math.isfinite(x):
    return None if math.isnan(x) else (1e308 if x > 0 else -1e308)
  return x


def write_json(path: str | pathlib.Path, data: Any) -> None:
  """Writes deterministic JSON (sorted keys, fixed indent) atomically."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(_jsonable(data), sort_keys=True, indent=1) + "\n")
  os.replace(tmp, path)


def read_json(path: str | pathlib.Path) -> Any:
  return json.loads(pathlib.Path(path).read_text())


def cached_json(path: str | pathlib.Path, key: Any, compute: Callable[[], Any]) -> Any:
  """`compute()` once per `key`: its JSON result is kept at `path` beside the key and read back
  while the key is the same; a file written under another key is recomputed and replaced.

  Why: work a train stage does before its training loops (solver fits, generated data) must not
  be redone by every resumed slice of a time-budgeted run.
  """
  path = pathlib.Path(path)
  key = _jsonable(key)
  if path.is_file():
    stored = read_json(path)
    if stored.get("key") == key:
      return stored["value"]
  value = _jsonable(compute())
  write_json(path, {"key": key, "value": value})
  return value


def write_jsonl(path: str | pathlib.Path, rows: Iterable[Mapping[str, Any]]) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text("".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in rows))
  os.replace(tmp, path)


def append_jsonl(path: str | pathlib.Path, row: Mapping[str, Any]) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(_jsonable(row), sort_keys=True) + "\n")


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
  """A progress bar on a terminal, periodic plain log lines otherwise."""

  def __init__(self, name: str, total: int, start: int = 0, log_every_s: float = 10.0, stream=None):
    self.name, self.total, self.start = name, total, start
    self.stream = stream or sys.stderr
    self.log_every_s = log_every_s
    self._t0 = time.perf_counter()
    self._last_log = self._t0
    self._bar = None
    if self.stream.isatty() and not os.environ.get("INNERLOOP_PLAIN_LOGS"):
      from tqdm import tqdm

      self._bar = tqdm(
        total=total, initial=start, desc=name, file=self.stream, dynamic_ncols=True, leave=False
      )

  def update(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
    now = time.perf_counter()
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      if metrics:
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
      return
    if now - self._last_log < self.log_every_s and step < self.total:
      return
    self._last_log = now
    done = step - self.start
    rate = done / max(now - self._t0, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    shown = "".join(f" {k} {v:.4g}" for k, v in (metrics or {}).items())
    print(
      f"[{self.name}] step {step}/{self.total}{shown} | {rate:.1f} steps/s | "
      f"ETA {_format_duration(eta)}",
      file=self.stream,
      flush=True,
    )

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def git_state(repo: str | pathlib.Path = ".") -> dict[str, Any]:
  """The commit and whether the work tree had uncommitted changes."""

  def run(*args: str) -> str | None:
    try:
      return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=10
      ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return None

  commit = run("rev-parse", "HEAD")
  status = run("status", "--porcelain", "--untracked-files=no")
  return {"commit": commit, "dirty": bool(status) if status is not None else None}


_PACKAGES = (
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "numpy",
  "matplotlib",
  "innerloop-core",
  "innerloop-tasks",
)


def manifest(config: Any, extra_packages: Iterable[str] = ()) -> dict[str, Any]:
  """What produced a run: code version, package versions, device, resolved config."""
  import jax

  versions = {}
  for name in (*_PACKAGES, *extra_packages):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  devices = jax.devices()
  return {
    "git": git_state(),
    "packages": versions,
    "python": platform.python_version(),
    "backend": jax.default_backend(),
    "devices": sorted({f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in devices}),
    "device_count": len(devices),
    "config": config,
  }
