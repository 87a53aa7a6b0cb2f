#!/usr/bin/env python3
"""The peer comparison's report: a markdown section and an SVG chart (a small SVG writer, stdlib
only) from the JSON lines the peer's harness appended (`loadtest.py run --results`).

  peer_report.py RESULTS.jsonl BCRYPT.json OUT.svg [OURS.json OURS_BATCH.json] > section.md

BCRYPT.json is the peer harness's bcrypt ceiling (Python's `bcrypt`); OURS*.json, if given, are
`loadtest bcrypt --json` (our kernel one hash at a time, and in batches as the hashing pool runs
them when logins queue up). The p99 target is judged against the highest ceiling (the strictest).
"""
import datetime
import json
import os
import statistics
import sys

results_path, bcrypt_path, svg_path = sys.argv[1:4]
rows = [json.loads(line) for line in open(results_path) if line.strip()]
peer_ceiling = json.load(open(bcrypt_path)).get("verifies_per_s")
ours_ceilings = [json.load(open(p)) for p in sys.argv[4:6]]
ceiling = max([peer_ceiling or 0] + [o.get("per_sec", 0) for o in ours_ceilings]) or None


def runs(label):
    return [r for r in rows if r["label"] == label]


def median_run(label):
    found = sorted(runs(label), key=lambda r: r["rps"])
    return found[len(found) // 2] if found else None


def cell(r):
    if r is None:
        return "n/a"
    reps = ", ".join(f"{x['rps']:.1f}" for x in runs(r["label"]))
    return f"{r['rps']:.1f}/s (p99 {r['p99_ms']:.0f} ms; runs {reps})"


out = []
out.append("## Beside the FastAPI-Users peer")
out.append("")
out.append(
    f"Run of {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC by `scripts/peer-bench.sh`: "
    f"{os.cpu_count()} cores, both services on SecantusDB 0.7.0b3 (each its own server), ours "
    "with Redis, bcrypt cost 10, no rate limit, the peer with 2 uvicorn workers; driven by the "
    "peer's wrk harness (`../shared/peers/loadtest.py`, wrk -t1), medians of three alternating "
    "runs."
)
out.append("")
if peer_ceiling:
    line = f"bcrypt cost-10 ceiling on all cores: {peer_ceiling:.1f} verifies/s with the peer's Python `bcrypt`"
    ours = [f"{o['per_sec']:.1f}/s " + ("one at a time" if o.get("batch", 1) == 1
                                        else f"in batches of {o['batch']}") for o in ours_ceilings]
    kernel = next((o["kernel"] for o in ours_ceilings if "kernel" in o), None)
    forced = os.environ.get("BCRYPT_FORCE_BACKEND")
    if kernel:
        ours[-1] += f" ({kernel} kernel, " + (f"pinned by BCRYPT_FORCE_BACKEND={forced}"
                                              if forced else "the crate's own pick") + ")"
    if ours:
        line += "; ours (`bcrypt-rust`) " + ", ".join(ours)
    out.append(line + ".")
    out.append("")
out.append("| figure | ours | FastAPI-Users | ours ÷ peer |")
out.append("|---|---|---|---|")
for what, label in [("logins/s c=16", "login c16"), ("logins/s c=64", "login c64"),
                    ("registrations/s c=16", "register c16")]:
    a, b = median_run(f"ours {label}"), median_run(f"peer {label}")
    ratio = f"**{a['rps'] / b['rps']:.2f}**" if a and b and b["rps"] else "n/a"
    out.append(f"| {what} | {cell(a)} | {cell(b)} | {ratio} |")
a = median_run("ours login c64")
if a and ceiling:
    fair = 1.25 * 64 / ceiling * 1000
    each = ", ".join(f"{x['p99_ms']:.0f}" for x in runs(a["label"]))
    out.append(f"| login p99 c=64 | {a['p99_ms']:.0f} ms (the median run's; each run's: {each}) | | "
               f"target ≤ 1.25 × 64 ÷ the highest ceiling ({ceiling:.1f}/s) = {fair:.0f} ms |")
errors = sum(r.get("errors", 0) for r in rows)
out.append("")
out.append(f"Errors over every run (socket errors, timeouts, HTTP ≥ 400): {errors}.")
out.append("")

# The sweep: throughput and p99 per concurrency level, both services.
levels = sorted({r["concurrency"] for r in rows if "sweep" in r["label"]})
series = {}
for who in ("ours", "peer"):
    for scenario in ("login", "me"):
        pts = {r["concurrency"]: r for r in runs(f"{who} sweep {scenario}")}
        series[(who, scenario)] = [(c, pts[c]["rps"], pts[c]["p99_ms"]) for c in levels if c in pts]

# The section lives in docs/benchmarks.md, beside the chart.
out.append("How cost grows with load ([chart](peer-sweep.svg)):")
out.append("")
out.append("| concurrency | logins/s ours | peer | p99 ms ours | peer | me/s ours | peer | p99 ms ours | peer |")
out.append("|---|---|---|---|---|---|---|---|---|")
for c in levels:
    def at(who, scenario):
        return next(((rps, p99) for cc, rps, p99 in series[(who, scenario)] if cc == c), (0, 0))
    lo, lp, mo, mp = at("ours", "login"), at("peer", "login"), at("ours", "me"), at("peer", "me")
    out.append(f"| {c} | {lo[0]:.1f} | {lp[0]:.1f} | {lo[1]:.0f} | {lp[1]:.0f} | "
               f"{mo[0]:.0f} | {mp[0]:.0f} | {mo[1]:.1f} | {mp[1]:.1f} |")
print("\n".join(out))


# ---------------------------------------------------------------- the chart
W, H, PAD = 460, 260, 48
COLORS = {"ours": "#d9480f", "peer": "#1971c2"}


def panel(x0, y0, title, scenario, metric, log_y):
    parts = [f'<g transform="translate({x0},{y0})">',
             f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{title}</text>']
    values = [v for who in ("ours", "peer") for (_, rps, p99) in series[(who, scenario)]
              for v in [rps if metric == "rps" else p99] if v > 0]
    if not values or not levels:
        return "\n".join(parts + ["</g>"])
    import math
    lo = min(values) if log_y else 0
    hi = max(values)
    if log_y:
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
    else:
        hi *= 1.1
    def sx(c):
        i = levels.index(c)
        return PAD + i * (W - 2 * PAD) / max(1, len(levels) - 1)
    def sy(v):
        if log_y:
            f = (math.log10(max(v, lo)) - math.log10(lo)) / max(1e-9, math.log10(hi) - math.log10(lo))
        else:
            f = v / hi
        return H - PAD - f * (H - 2 * PAD)
    parts.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>')
    parts.append(f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>')
    for c in levels:
        parts.append(f'<text x="{sx(c):.1f}" y="{H - PAD + 16}" text-anchor="middle" font-size="11">{c}</text>')
    parts.append(f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="11">concurrent clients</text>')
    ticks = []
    if log_y:
        t = lo
        while t <= hi:
            ticks.append(t)
            t *= 10
    else:
        ticks = [hi * i / 4 for i in range(5)]
    for t in ticks:
        parts.append(f'<line x1="{PAD - 4}" y1="{sy(t):.1f}" x2="{W - PAD}" y2="{sy(t):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{PAD - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" font-size="10">{t:.3g}</text>')
    for who in ("ours", "peer"):
        pts = [(sx(c), sy(rps if metric == "rps" else p99)) for c, rps, p99 in series[(who, scenario)]]
        if pts:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[who]}" stroke-width="2"/>')
            for x, y in pts:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[who]}"/>')
    parts.append("</g>")
    return "\n".join(parts)


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{2 * H + 40}" '
       f'font-family="sans-serif" viewBox="0 0 {2 * W} {2 * H + 40}">',
       f'<rect width="100%" height="100%" fill="white"/>',
       panel(0, 0, "logins/s", "login", "rps", False),
       panel(W, 0, "login p99 (ms, log)", "login", "p99", True),
       panel(0, H, "GET me/s", "me", "rps", False),
       panel(W, H, "GET me p99 (ms, log)", "me", "p99", True),
       f'<g transform="translate({PAD},{2 * H + 20})" font-size="12">'
       f'<rect width="12" height="12" fill="{COLORS["ours"]}"/><text x="18" y="11">cs-user-management (actix, Rust)</text>'
       f'<rect x="280" width="12" height="12" fill="{COLORS["peer"]}"/><text x="298" y="11">FastAPI-Users (2 uvicorn workers)</text></g>',
       "</svg>"]
open(svg_path, "w").write("\n".join(svg) + "\n")
