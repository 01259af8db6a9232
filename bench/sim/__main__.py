"""``python -m bench.sim``: run simulations; see bench/sim/__init__.py and docs/testing.md."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace

from bench.sim.run import BUGS, SimConfig, run, shrink


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__)
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds to run")
    p.add_argument("--steps", type=int, default=100_000, help="steps per seed")
    p.add_argument("--chunk", type=int, default=0, help="split --steps into runs of this many steps (new seed each)")
    for f in fields(SimConfig):
        if f.name in ("seed", "steps", "bug"):
            continue
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--bug", choices=BUGS, default="", help="run a deliberately broken actor (checks the checks)")
    p.add_argument("--no-shrink", action="store_true")
    p.add_argument("--shrink-budget", type=float, default=120.0)
    p.add_argument("--json", help="write the summary here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = _args(argv)
    base = SimConfig(**{f.name: getattr(a, f.name) for f in fields(SimConfig) if f.name not in ("seed", "steps")})
    chunk = a.chunk or a.steps
    plan = []
    for s in range(a.seed, a.seed + a.seeds):
        left, part = a.steps, 0
        while left > 0:
            n = min(chunk, left)
            plan.append(replace(base, seed=s if a.chunk == 0 else s * 1_000_003 + part, steps=n))
            left -= n
            part += 1
    t0 = time.perf_counter()
    tot = {"runs": 0, "steps": 0, "faults": 0, "sim_seconds": 0.0}
    counts: dict = {}
    failures = []
    for cfg in plan:
        r = run(cfg)
        tot["runs"] += 1
        tot["steps"] += r.steps
        tot["faults"] += r.faults_injected
        tot["sim_seconds"] += r.sim_seconds
        for k, v in r.counts.items():
            counts[k] = counts.get(k, 0) + v
        if sys.stderr.isatty():
            print(f"\r{tot['runs']}/{len(plan)} runs, {tot['steps']} steps, {time.perf_counter() - t0:.0f}s", end="", file=sys.stderr)
        elif len(plan) > 1:
            print(f"run {tot['runs']}/{len(plan)} seed {cfg.seed}: {r.steps} steps {'ok' if r.ok else 'FAILED'}, "
                  f"{tot['steps']} steps in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        if not r.ok:
            print(f"\nFAILED: seed {cfg.seed} ({cfg}) at step {r.steps}:\n  {r.violation}")
            fcfg, fr = cfg, r
            if not a.no_shrink:
                fcfg, fr = shrink(cfg, budget=a.shrink_budget, log=lambda m: print("  shrink:", m))
            print(f"reproduce: python -m bench.sim {_cli(fcfg)}")
            print(f"violation: {fr.violation}")
            print("operation log (last steps):")
            for line in fr.log_tail[-40:]:
                print("  " + line)
            failures.append({"config": fcfg.__dict__, "violation": fr.violation, "log": fr.log_tail[-40:]})
            break
    wall = time.perf_counter() - t0
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"runs {tot['runs']}  steps {tot['steps']}  faults injected {tot['faults']}  "
          f"simulated {tot['sim_seconds']:.0f}s  wall {wall:.1f}s  ({tot['steps'] / max(wall, 1e-9):.0f} steps/s)")
    keys = ("acked", "writer.open", "writer.flush", "compactor.apply", "gc.pass", "gc.deleted.sst", "gc.deleted.wal",
            "gc.deleted.manifest", "reader.read", "checkpoint.add", "checkpoint.read", "missing_read", "unavailable",
            "fenced.writer", "fenced.compactor", "crash.writer", "crash.compactor", "crash.gc", "crash.reader", "crash.checkpoint")
    print("  ".join(f"{k} {counts.get(k, 0)}" for k in keys))
    print("violations:", len(failures))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**tot, "wall_seconds": wall, "counts": counts, "failures": failures}, f, indent=1)
    return 1 if failures else 0


def _cli(cfg: SimConfig) -> str:
    d = SimConfig()
    parts = [f"--seed {cfg.seed}", f"--steps {cfg.steps}"]
    for f in fields(SimConfig):
        if f.name in ("seed", "steps"):
            continue
        v = getattr(cfg, f.name)
        if v != getattr(d, f.name):
            parts.append(f"--{f.name.replace('_', '-')} {v}")
    return " ".join(parts) + " --no-shrink"


if __name__ == "__main__":
    sys.exit(main())
