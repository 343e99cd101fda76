"""Checkpoints: atomic orbax saves, resume from the latest, refuse the wrong or corrupt.

A checkpoint holds the flattened leaves of an arbitrary pytree (parameters, optimizer
state, ...) and a JSON record (step, config fingerprint, metric history, checksum).
Leaves are saved as a flat list because the tree structure always comes from the code
that restores (a freshly initialised state), which keeps NNX/optax containers out of the
file format.

Guarantees:
  * atomic: orbax writes to a temporary directory and renames on commit, so a run killed
    mid-save leaves the previous checkpoint intact;
  * a checkpoint written under another config (different fingerprint) is refused;
  * a corrupt checkpoint (unreadable, or leaves whose SHA-256 differs from the one recorded
    at save time) raises `CheckpointError`; it is never used silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
from typing import Any

import jax
import numpy as np

logging.getLogger("absl").setLevel(logging.ERROR)

import orbax.checkpoint as ocp  # noqa: E402  (after quieting absl's info logs)


class CheckpointError(RuntimeError):
  """A checkpoint that must not be used (other config, corrupt, unreadable)."""


def tree_checksum(leaves: list[np.ndarray]) -> str:
  """SHA-256 over dtype, shape and bytes of every leaf, in order."""
  h = hashlib.sha256()
  for leaf in leaves:
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()


@dataclasses.dataclass
class Restored:
  step: int
  tree: Any
  record: dict[str, Any]


class Checkpointer:
  """Saves and restores one run's state under `directory` (keeps the latest `keep`)."""

  def __init__(self, directory: str | pathlib.Path, fingerprint: str, keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self.fingerprint = fingerprint
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=False, create=True
      ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, tree: Any, record: dict[str, Any]) -> None:
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    record = dict(
      record,
      step=step,
      fingerprint=self.fingerprint,
      checksum=tree_checksum(leaves),
      num_leaves=len(leaves),
    )
    items = {f"{i:05d}": leaf for i, leaf in enumerate(leaves)}
    self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(items), record=ocp.args.JsonSave(record)),
      force=True,
    )
    self._manager.wait_until_finished()

  def restore_latest(self, like: Any) -> Restored | None:
    """Restores the latest checkpoint into the structure of `like`; None if there is none."""
    step = self.latest_step()
    if step is None:
      return None
    where = self.directory / str(step)
    try:
      record = self._manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))[
        "record"
      ]
    except Exception as e:  # orbax raises many types for unreadable files
      raise CheckpointError(
        f"checkpoint {where} is unreadable ({type(e).__name__}); delete it to start over"
      ) from e
    if record.get("fingerprint") != self.fingerprint:
      raise CheckpointError(
        f"checkpoint {where} was written under another config (fingerprint "
        f"{record.get('fingerprint')} != {self.fingerprint}); use another run directory "
        f"or delete it to start over"
      )
    like_leaves, treedef = jax.tree.flatten(like)
    if record.get("num_leaves") != len(like_leaves):
      raise CheckpointError(
        f"checkpoint {where} holds {record.get('num_leaves')} arrays, the model expects "
        f"{len(like_leaves)}; delete it to start over"
      )
    abstract = {
      f"{i:05d}": np.zeros(np.shape(x), np.asarray(x).dtype) for i, x in enumerate(like_leaves)
    }
    try:
      items = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
      )["state"]
    except Exception as e:
      raise CheckpointError(
        f"checkpoint {where} is corrupt or unreadable ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:200] if str(e) else ''}); delete it to start over"
      ) from e
    leaves = [np.asarray(items[f"{i:05d}"]) for i in range(len(like_leaves))]
    if tree_checksum(leaves) != record.get("checksum"):
      raise CheckpointError(
        f"checkpoint {where} is corrupt (checksum mismatch); delete it to start over"
      )
    tree = jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
    return Restored(step=step, tree=tree, record=record)
