#!/usr/bin/env python3
"""Summarize bench/compare.sh results.

Files: `ours-<model>[@<variant>]-<round>.json` (variant: `avx2`, `f16`, ...; none for the
default run) and `peer-<model>-<round>.json`. For each model and figure it prints the best run
of each side and, since compare.sh alternates the sides within a round, the per-round ratio of
medians (ours / peer, as a speed: above 1 is faster) with its range over the rounds.
"""
import glob
import json
import os
import sys


def parse(path):
    """(side, model, variant, round) from a result file name."""
    stem = os.path.basename(path)[: -len(".json")]
    side, rest = stem.split("-", 1)
    name, rnd = rest.rsplit("-", 1)
    model, _, variant = name.partition("@")
    return side, model, variant or "default", rnd


def figure(rep, name):
    return next((f for f in rep["figures"] if f["name"] == name), None)


def speed_ratio(ours, peer, unit):
    return peer / ours if unit == "s" else ours / peer


def main(d):
    runs = {}
    for p in sorted(glob.glob(f"{d}/*.json")):
        try:
            side, model, variant, rnd = parse(p)
        except ValueError:
            continue
        if side not in ("ours", "peer"):
            continue
        runs.setdefault(model, {}).setdefault((side, variant), {})[rnd] = json.load(open(p))
    for model, sides in sorted(runs.items()):
        peer = sides.get(("peer", "default"), {})
        variants = sorted(v for (s, v) in sides if s == "ours")
        print(f"\n{model}: {len(peer)} peer rounds; ours: "
              + ", ".join(f"{v} ({len(sides[('ours', v)])} rounds)" for v in variants))
        if not peer:
            continue
        first = next(iter(peer.values()))
        names = [(f["name"], f["unit"]) for f in first["figures"]]
        head = " | ".join(f"ours {v}: best, ratio per round" for v in variants)
        print(f"| figure | peer best | {head} |")
        print("|---" * (2 + len(variants)) + "|")
        for name, unit in names:
            pb = [r for rep in peer.values() if (f := figure(rep, name)) for r in f["runs"]]
            if not pb:
                continue
            cells = []
            for v in variants:
                ours = sides[("ours", v)]
                ob = [r for rep in ours.values() if (f := figure(rep, name)) for r in f["runs"]]
                ratios = [
                    speed_ratio(fo["value"], fp["value"], unit)
                    for rnd, rep in sorted(ours.items())
                    if rnd in peer
                    and (fo := figure(rep, name))
                    and (fp := figure(peer[rnd], name))
                ]
                if not ob:
                    cells.append("-")
                    continue
                best = min(ob) if unit == "s" else max(ob)
                rng = (f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "no paired round")
                cells.append(f"{best:.2f} {unit}, {rng}")
            pbest = min(pb) if unit == "s" else max(pb)
            print(f"| {name} | {pbest:.2f} {unit} | " + " | ".join(cells) + " |")
        pp = max(r.get("peak_rss_bytes") or 0 for r in peer.values()) / 1e9
        cells = []
        for v in variants:
            po = max(r.get("peak_rss_bytes") or 0 for r in sides[("ours", v)].values()) / 1e9
            cells.append(f"{po:.2f} GB, {po / pp:.2f}x the peer's" if pp else f"{po:.2f} GB")
        print(f"| peak RSS | {pp:.2f} GB | " + " | ".join(cells) + " |")
    print("\nRatios are speeds (above 1: ours faster); for times that is peer / ours.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/bench-data/results")
