"""The timeline picture of a ``bench.ingest`` run (``--plot PATH``).

``plot_timeline(samples, path)`` draws one panel each for records/s of
ingest, L0 SSTs, sorted runs, store bytes, the flusher's stall time and the
writers' paced time (write pacing, docs/compaction.md), against
seconds since prefill began, with the phases shaded (prefill, flush, the
close right after it that builds L0 for the through-close figure, compact).
``samples`` are the ShaleDB adapter's once-a-second samples (dicts with
``t``, ``phase``, ``records``, ``l0``, ``sorted_runs``, ``store_bytes``,
``stall_s``, ``paced_s``; a missing or None field is a gap); a seventh
panel shows the prefill's ``put_many`` calls over 250 ms when given.  The time between phases
(the mixed and read phases, not sampled) is cut out: the x axis is sampled
time only, and a dotted line marks each cut.

matplotlib is an optional extra (``pip install -e '.[bench]'``); only this
module imports it.
"""

from __future__ import annotations

__all__ = ["plot_timeline", "timeline_series"]

_PHASE_COLORS = {"prefill": "#dbe9f6", "flush": "#fde0c5", "close": "#f3d9ec", "compact": "#d9f0d3"}


def timeline_series(samples: list[dict]) -> dict:
    """The plotted series, as lists (the arithmetic, apart from drawing).

    Time is made contiguous: a gap between two phases longer than 1.5 s is
    cut to 1 s.  ``rate`` is records/s between consecutive prefill/flush
    samples (None where unknown); ``cuts`` are the x positions of the cuts;
    ``spans`` are (phase, x0, x1) in drawing order.
    """
    xs, cuts, spans = [], [], []
    shift = 0.0
    prev_t = prev_phase = None
    for s in samples:
        t = float(s["t"])
        cut = None
        if prev_t is not None and s.get("phase") != prev_phase and t - prev_t > 1.5:
            shift += t - prev_t - 1.0
            cut = t - shift - 0.5
            cuts.append(cut)
        x = t - shift
        if spans and spans[-1][0] == s.get("phase"):
            spans[-1][2] = x
        else:  # a sample covers the second before it: a phase starts at the cut or the previous sample
            start = cut if cut is not None else (xs[-1] if xs else x)
            spans.append([s.get("phase"), start, x])
        xs.append(x)
        prev_t, prev_phase = t, s.get("phase")
    rate: list = [None]
    for i in range(1, len(samples)):
        a, b = samples[i - 1].get("records"), samples[i].get("records")
        dt = samples[i]["t"] - samples[i - 1]["t"]
        rate.append((b - a) / dt if a is not None and b is not None and dt > 0 else None)

    def col(name):
        return [s.get(name) for s in samples]

    return {"x": xs, "rate": rate, "l0": col("l0"), "sorted_runs": col("sorted_runs"),
            "store_bytes": col("store_bytes"), "stall_s": col("stall_s"), "paced_s": col("paced_s"), "cuts": cuts,
            "spans": [tuple(sp) for sp in spans]}


def plot_timeline(samples: list[dict], path: str, title: str = "", long_calls=None) -> None:
    """Draw the six panels to ``path`` (PNG, or whatever its suffix says),
    and a seventh with ``long_calls`` when given: prefill ``put_many`` calls
    over 250 ms as ``[start s, seconds]`` on the samples' clock (prefill is
    the first phase: no cut comes before it).
    REQUIRES: matplotlib; at least one sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = timeline_series(samples)
    x = d["x"]
    panels = [
        ("rate", "records/s", lambda v: v / 1e6, "M records/s of ingest"),
        ("l0", "L0 SSTs", None, "L0 SSTs"),
        ("sorted_runs", "sorted runs", None, "sorted runs"),
        ("store_bytes", "store", lambda v: v / 2**20, "MiB in the store"),
        ("stall_s", "stall", None, "flusher L0 stall s (cumulative)"),
        ("paced_s", "paced", None, "writers' paced s (cumulative)"),
    ]
    if long_calls is not None:
        d["long_calls"] = None  # drawn below, not as a series
        panels.append(("long_calls", "long calls", None, "put_many calls > 250 ms: s"))
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(10, 1.7 * len(panels)), constrained_layout=True)
    for ax, (key, _short, scale, label) in zip(axes, panels):
        if key == "long_calls":
            for phase, x0, x1 in d["spans"]:
                ax.axvspan(x0, x1, color=_PHASE_COLORS.get(phase, "#eeeeee"), lw=0)
            if long_calls:
                ax.vlines([c[0] for c in long_calls], 0, [c[1] for c in long_calls], color="#b22222", lw=1.2)
            else:
                ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center", color="#888888")
            ax.set_ylabel(label, fontsize=9)
            ax.set_ylim(bottom=0)
            ax.grid(axis="y", color="#dddddd", lw=0.5)
            continue
        ys = [None if v is None else (scale(v) if scale else v) for v in d[key]]
        pts = [(a, b) for a, b in zip(x, ys) if b is not None]
        for phase, x0, x1 in d["spans"]:
            ax.axvspan(x0, x1, color=_PHASE_COLORS.get(phase, "#eeeeee"), lw=0)
        for c in d["cuts"]:
            ax.axvline(c, color="#888888", ls=":", lw=1)
        if pts:
            # one line per stretch between cuts: nothing is drawn across the cut-out phases
            for lo, hi in zip([float("-inf"), *d["cuts"]], [*d["cuts"], float("inf")]):
                seg = [(a, b) for a, b in pts if lo < a < hi]
                if not seg:
                    continue
                px, py = zip(*seg)
                if key in ("l0", "sorted_runs"):
                    ax.step(px, py, where="post", color="#1f4e79", lw=1.5)
                else:
                    ax.plot(px, py, color="#1f4e79", lw=1.5, marker="." if len(pts) < 40 else None)
        else:
            ax.text(0.5, 0.5, "not reported by this engine build", transform=ax.transAxes, ha="center",
                    va="center", color="#888888")
        ax.set_ylabel(label, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", color="#dddddd", lw=0.5)
    axes[-1].set_xlabel("seconds of prefill, flush, close and compact (other phases cut out at the dotted lines)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _PHASE_COLORS.values()]
    axes[0].legend(handles, list(_PHASE_COLORS), loc="upper right", fontsize=8, ncol=len(_PHASE_COLORS))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
