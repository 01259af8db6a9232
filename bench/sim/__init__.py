"""Deterministic simulation of the manifest protocol (docs/testing.md).

``python -m bench.sim --steps 1000000 --seed 7``

Writers, compactors, GC, readers and checkpoint creators run the engine's
real protocol code (``ManifestStore`` roles, epochs and fences,
``gc.collect``, the WAL codec and ``read_wal_runs``) over a simulated object
store with a simulated clock.  One seeded scheduler decides which actor
takes its next store call, which call fails, lands and fails, or lands late,
how long each takes, and when an actor crashes: a run is a function of its
configuration alone, so any failure replays exactly.

Checked after every step (:meth:`World.check` and the actors):

* no acknowledged write lost: the latest manifest's SSTs plus the WAL after
  its replay point hold every acknowledged seq;
* no manifest (or live checkpoint's pinned manifest) references a missing
  object; the WAL after the replay point has no hole;
* no reader or checkpoint finds an object deleted while it was entitled to
  it (within GC's ``min_age`` of reading the manifest; while the checkpoint
  lives); a reader's view holds every write acknowledged before it began;
* no false fence (Fenced only when a newer epoch of that role is stored);
* epochs and the latest manifest id only grow;
* L0 never leads the WAL (``replay_after_wal_id`` < ``next_wal_id``, never
  past a WAL id that was written, ``last_l0_seq`` never past a WAL seq).

A failure prints the seed and configuration, is shrunk (:func:`shrink`) to
the shortest failing run, and its operation log is printed.
"""

from bench.sim.run import BUGS, SimConfig, SimResult, World, run, shrink

__all__ = ["BUGS", "SimConfig", "SimResult", "World", "run", "shrink"]
