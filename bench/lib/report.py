#!/usr/bin/env python3
"""bench/run's numbers: what one phase measured, and the report of a whole run.

  report.py phase DIR                 DIR/result.json from a phase's files; prints one line per sink
  report.py verdict DIR [--p99-max MS] exit 0 when the phase kept up (find-max's step test)
  report.py final OUT [--command TEXT] OUT/report.json, OUT/report.md and OUT/plot.svg (gnuplot)
  report.py ingress OUT [--command T]  the same for the ingress scenario, from OUT/ingress.txt

Definitions (a phase's directory has meta.json with the instants):
  window      events csusim committed in [t_warm, t_end): the measured seconds after a warm-up
  offered     window events / window seconds, per sink (the trigger takes Checkouts with an email)
  delivered   first receipts during the window / window seconds
  lost        events committed from csusim's start to t_end never received, even after the drain
  duplicated  events received more than once (and the extra receipts)
  latency     EventDateTime -> first receipt (trigger, webhook: csusim's clock; mqtt: the recorder's
              clock, the same machine), window events only; nearest-rank percentiles as csusim's
  CPU         the subject's user+system time over the window, % of one core; RSS its peak
"""
import argparse
import bisect
import calendar
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

SINK_FILES = {"cij": "receipts_trigger.csv", "webhook": "receipts_audit.csv"}
SINK_NAMES = {"cij": "trigger", "webhook": "webhook", "mqtt": "mqtt"}


# ------------------------------------------------------------------------------------------------
# Reading a phase
# ------------------------------------------------------------------------------------------------

def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_receipts(path):
    """[(event_ms, commit_ms, first_ms, count, id)] from csusim's /ledger/receipts CSV."""
    rows = []
    with open(path) as f:
        next(f, None)
        for line in f:
            e, c, fst, n, eid = line.rstrip("\n").split(",", 4)
            rows.append((int(e), int(c), int(fst), int(n), eid))
    return rows


def event_ms(text):
    """An EventDateTime ("2026-11-22T14:17:02.16Z") as epoch ms."""
    head, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) * 1000 + int((frac + "000")[:3])


def mqtt_rows(dir_):
    """The ledger's events joined with the recorder's receipts: rows shaped as read_receipts's,
    plus the count of receipts of ids the ledger does not know."""
    first, count = {}, {}
    path = os.path.join(dir_, "mqtt.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3:
                    continue
                t, eid = int(parts[0]) // 1000, parts[1]
                if eid not in first:
                    first[eid] = t
                count[eid] = count.get(eid, 0) + 1
    rows = []
    for e, c, _, _, eid in read_receipts(os.path.join(dir_, "receipts___every_event__.csv")):
        rows.append((e, c, first.get(eid, 0), count.get(eid, 0), eid))
    known = {r[4] for r in rows}
    unknown = sum(n for eid, n in count.items() if eid not in known)
    return rows, unknown


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    rank = (len(sorted_values) * q + 99) // 100
    return sorted_values[max(rank, 1) - 1]


def sink_stats(rows, meta):
    """Offered, delivered, lost, duplicated and latency of one sink; plus its series for the plot."""
    t_warm, t_end, secs = meta["t_warm_ms"], meta["t_end_ms"], meta["secs"]
    window = [r for r in rows if t_warm <= r[1] < t_end]
    lat = sorted(r[2] - r[0] for r in window if r[3] > 0)
    firsts = [r[2] for r in rows if r[3] > 0]
    delivered = sum(1 for t in firsts if t_warm <= t < t_end)
    lost = [r[4] for r in rows if r[3] == 0 and r[1] < t_end]
    dups = [r for r in rows if r[3] > 1]
    # lag growth: the median latency of the window's last quarter against its second quarter
    q = (t_end - t_warm) / 4
    mid = sorted(r[2] - r[0] for r in window if r[3] and t_warm + q <= r[1] < t_warm + 2 * q)
    last = sorted(r[2] - r[0] for r in window if r[3] and t_warm + 3 * q <= r[1])
    growth = (percentile(last, 50) or 0) - (percentile(mid, 50) or 0)
    return {
        "expected": len(window),
        "offered_per_s": round(len(window) / secs, 1),
        "delivered_per_s": round(delivered / secs, 1),
        "lost": len(lost),
        "lost_ids": lost[:10],
        "duplicated": len(dups),
        "extra_receipts": sum(r[3] - 1 for r in dups),
        "latency_ms": {"p50": percentile(lat, 50), "p90": percentile(lat, 90),
                       "p99": percentile(lat, 99), "max": lat[-1] if lat else None},
        "median_growth_ms": growth,
    }, lat, firsts


def series(times, t0, t_from, t_to):
    """Counts per second of `times` between t_from and t_to, x in seconds since t0."""
    n = max(1, int((t_to - t_from) // 1000))
    bins = [0] * n
    for t in times:
        i = int((t - t_from) // 1000)
        if 0 <= i < n:
            bins[i] += 1
    return [((t_from - t0) / 1000 + i, b) for i, b in enumerate(bins)]


def cdf_points(lat, points=400):
    if not lat:
        return []
    step = max(1, len(lat) // points)
    out = [(lat[i], (i + 1) / len(lat)) for i in range(0, len(lat), step)]
    out.append((lat[-1], 1.0))
    return out


def resources(samples, meta):
    """CPU % of one core over the window and peak RSS of the subject; CPU of csusim and mosquitto."""
    hz = meta["hz"]
    t_warm, t_end = meta["t_warm_ms"], meta["t_end_ms"]
    inside = [s for s in samples if t_warm - 1000 <= s["t_ms"] <= t_end + 1000]
    out = {"peak_rss_mb": round(max((s["rss_kb"] for s in samples), default=0) / 1024, 1)}
    if len(inside) >= 2:
        a, b = inside[0], inside[-1]
        dt = (b["t_ms"] - a["t_ms"]) / 1000
        for key, name in (("cpu", "cpu_pct"), ("cpu_csusim", "csusim_cpu_pct"),
                          ("cpu_mosquitto", "mosquitto_cpu_pct")):
            if a.get(key) is not None and b.get(key) is not None:
                out[name] = round(100.0 * (b[key] - a[key]) / hz / dt, 1)
    lags = [s["lag_s"] for s in inside if s.get("lag_s") is not None]
    if lags:
        out["max_cursor_lag_s"] = max(lags)
    return out


def relay_counters(path):
    """Totals of the relay's own counters from its final /metrics."""
    wanted = ("csurelay_polled_events_total", "csurelay_admitted_total", "csurelay_duplicates_total",
              "csurelay_delivered_total", "csurelay_retried_total", "csurelay_dead_total",
              "csurelay_skipped_total", "csurelay_searches_total", "csurelay_search_errors_total")
    totals = {}
    if not os.path.exists(path):
        return totals
    with open(path) as f:
        for line in f:
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in wanted:
                totals[name[len("csurelay_"):]] = totals.get(name[len("csurelay_"):], 0) + float(line.split()[-1])
    return {k: int(v) for k, v in totals.items()}


def outage_stats(rows, meta, res):
    """The trigger's backlog drain once cij is back: its rate against the offered rate."""
    down, up = meta["outage_down_ms"], meta["outage_up_ms"]
    before = [r for r in rows if r[1] < up]
    backlog = sum(1 for r in before if r[1] >= down - 5000 and not (r[3] and r[2] < up))
    delivered_before = [r[2] for r in before if r[3]]
    drained_at = max(delivered_before) if delivered_before and all(r[3] for r in before) else None
    out = {"down_s": round((up - down) / 1000, 1), "backlog_at_recovery": backlog,
           "memory_mb_limit": meta["memory_mb"], "peak_rss_mb": res.get("peak_rss_mb"),
           "rss_within_limit": res.get("peak_rss_mb", 0) <= meta["memory_mb"]}
    offered = sum(1 for r in rows if meta["t_warm_ms"] <= r[1] < down) / max(0.001, (down - meta["t_warm_ms"]) / 1000)
    out["offered_per_s"] = round(offered, 1)
    if drained_at and drained_at > up:
        during = sum(1 for r in rows if r[3] and up <= r[2] <= drained_at)
        first_after = min(r[2] for r in rows if r[3] and r[2] >= up)
        secs = (drained_at - up) / 1000
        out.update(drain_s=round(secs, 1), first_delivery_after_s=round((first_after - up) / 1000, 1),
                   drain_per_s=round(during / secs, 1), drain_vs_offered=round(during / secs / max(offered, 0.001), 2))
    else:
        out["drain_s"] = None
    return out


def phase(dir_):
    meta = load_json(os.path.join(dir_, "meta.json"))
    samples = [json.loads(l) for l in open(os.path.join(dir_, "samples.jsonl"))] \
        if os.path.exists(os.path.join(dir_, "samples.jsonl")) else []
    result = {"dir": os.path.basename(os.path.normpath(dir_)), "meta": meta,
              "drain": load_json(os.path.join(dir_, "drain.json"), {}), "sinks": {}}
    plot = {"cdf": {}, "tput": {}}
    all_rows = read_receipts(os.path.join(dir_, "receipts___every_event__.csv"))
    t0 = meta["t_warm_ms"]
    # whole seconds from csusim's start to the window's end: later receipts are only those of
    # events committed before the end, so a bin past it would show a drop that is not there
    span = (meta["t_warm_ms"] - 1000 * ((meta["t_warm_ms"] - meta["sim_t0_ms"]) // 1000), meta["t_end_ms"] - 1)
    plot["tput"]["offered"] = series([r[1] for r in all_rows], t0, *span)
    for sink in meta["sinks"]:
        if sink == "mqtt":
            rows, unknown = mqtt_rows(dir_)
        else:
            rows = read_receipts(os.path.join(dir_, SINK_FILES[sink]))
            diff = load_json(os.path.join(dir_, "diff_%s.json" % ("trigger" if sink == "cij" else "audit")), {})
            unknown = diff.get("unknown", 0)
        stats, lat, firsts = sink_stats(rows, meta)
        stats["unknown"] = unknown
        if sink != "mqtt":
            stats["mismatched"] = diff.get("mismatched", 0)
        if sink == "cij" and meta.get("outage_up_ms"):
            result["outage"] = None  # filled below, once resources are known
            outage_rows = rows
        result["sinks"][SINK_NAMES[sink]] = stats
        plot["cdf"][SINK_NAMES[sink]] = cdf_points(lat)
        plot["tput"][SINK_NAMES[sink]] = series(firsts, t0, *span)
    result["resources"] = resources(samples, meta)
    if "outage" in result:
        result["outage"] = outage_stats(outage_rows, meta, result["resources"])
    if meta["subject"] == "relay":
        result["relay_counters"] = relay_counters(os.path.join(dir_, "metrics.txt"))
    with open(os.path.join(dir_, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(dir_, "plot.json"), "w") as f:
        json.dump(plot, f)
    print_phase(result)
    return result


def print_phase(r):
    m, res = r["meta"], r["resources"]
    print(f"  {m['subject']} at {m['rate']:g} events/s: CPU {res.get('cpu_pct', '?')} % of one core, "
          f"peak RSS {res['peak_rss_mb']} MB; drain {r['drain'].get('secs')} s", file=sys.stderr)
    for name, s in r["sinks"].items():
        lat = s["latency_ms"]
        print(f"    {name:8s} offered {s['offered_per_s']:>8,.1f}/s delivered {s['delivered_per_s']:>8,.1f}/s "
              f"lost {s['lost']} dup {s['duplicated']}  p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} "
              f"max {lat['max']} ms", file=sys.stderr)
    if r.get("outage"):
        print(f"    outage: {r['outage']}", file=sys.stderr)


def primary(result):
    """The sink that carries every event (mqtt, else webhook), else the trigger."""
    for name in ("mqtt", "webhook", "trigger"):
        if name in result["sinks"]:
            return name
    return None


def verdict(dir_, p99_max):
    """(ok, reason) for find-max: nothing lost, drained, no growing lag, p99 under the target."""
    r = load_json(os.path.join(dir_, "result.json"))
    for name, s in r["sinks"].items():
        if s["lost"]:
            return False, f"{name}: {s['lost']} lost"
        if s["latency_ms"]["p99"] is None:
            return False, f"{name}: nothing delivered"
        if s["latency_ms"]["p99"] > p99_max:
            return False, f"{name}: p99 {s['latency_ms']['p99']} ms > {p99_max} ms"
        if s["median_growth_ms"] > 1000:
            return False, f"{name}: lag growing (median +{s['median_growth_ms']} ms over the window)"
        if s["delivered_per_s"] < 0.9 * s["offered_per_s"]:
            return False, f"{name}: delivered {s['delivered_per_s']}/s of {s['offered_per_s']}/s offered"
    if not r["drain"].get("drained", False):
        return False, "not drained"
    return True, "kept up"


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------

def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return (f"{v:,}" if isinstance(v, int) else f"{v:,.1f}") + unit


def run_label(m):
    """What a phase was: a find-max step (kept up or not), the half-rate run, or the run."""
    if m.get("role") == "step":
        return "find-max " + ("✓" if m.get("passed") else "✗")
    return "half max" if m.get("role") == "half" else ""


def table(results):
    head = ["subject", "rate ev/s", "run", "sink", "offered ev/s", "delivered ev/s", "lost", "duplicated",
            "p50 ms", "p90 ms", "p99 ms", "max ms", "CPU % (1 core)", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m, res = r["meta"], r["resources"]
        for i, (name, s) in enumerate(r["sinks"].items()):
            lat = s["latency_ms"]
            dup = fmt(s["duplicated"]) + (f" ({s['extra_receipts']} extra)" if s["extra_receipts"] else "")
            lines.append("| " + " | ".join([
                m["subject"] if i == 0 else "", fmt(m["rate"]) if i == 0 else "",
                run_label(m) if i == 0 else "", name,
                fmt(s["offered_per_s"]), fmt(s["delivered_per_s"]), fmt(s["lost"]), dup,
                fmt(lat["p50"]), fmt(lat["p90"]), fmt(lat["p99"]), fmt(lat["max"]),
                fmt(res.get("cpu_pct")) if i == 0 else "", fmt(res.get("peak_rss_mb")) if i == 0 else ""]) + " |")
    return lines


def comparison(relay, peer):
    """csurelay ÷ Node-RED: throughput of the sink that carries every event, and latency."""
    a, b = primary(relay), primary(peer)
    if a is None or a != b:
        return None
    ra, rb = relay["sinks"][a], peer["sinks"][b]
    out = {"sink": a}
    if relay["meta"].get("max_rate") is not None and peer["meta"].get("max_rate"):
        out["max_rate_ratio"] = round(relay["meta"]["max_rate"] / peer["meta"]["max_rate"], 2)
    if rb["delivered_per_s"]:
        out["throughput_ratio"] = round(ra["delivered_per_s"] / rb["delivered_per_s"], 2)
    for q in ("p50", "p99"):
        if ra["latency_ms"][q] and rb["latency_ms"][q]:
            out[f"latency_{q}_ratio"] = round(ra["latency_ms"][q] / rb["latency_ms"][q], 2)
    return out


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def pick(results, subject):
    """The phase of `subject` the report is about: the highest passing find-max step, else the
    only or last one."""
    mine = [r for r in results if r["meta"]["subject"] == subject]
    steps = [r for r in mine if r["meta"].get("role") == "step" and r["meta"].get("passed")]
    if steps:
        return max(steps, key=lambda r: r["meta"]["rate"])
    main = [r for r in mine if r["meta"].get("role") in (None, "run")]
    return (main or mine or [None])[-1]


def write_plot(out, results):
    """plot.svg: latency CDF per subject and sink (top), delivered events/s over time (bottom)."""
    gp = shutil.which("gnuplot")
    data = os.path.join(out, "plot-data")
    os.makedirs(data, exist_ok=True)
    cdf_plots, tput_plots = [], []
    for r in results:
        p = load_json(os.path.join(out, r["dir"], "plot.json"), {"cdf": {}, "tput": {}})
        label = f"{r['meta']['subject']} {r['meta']['rate']:g}/s"
        for name, pts in p["cdf"].items():
            if pts:
                f = os.path.join(data, f"cdf-{r['dir']}-{name}.dat")
                open(f, "w").write("".join(f"{x} {y}\n" for x, y in pts))
                cdf_plots.append(f"'{f}' using 1:2 with lines lw 2 title '{label} {name}'")
        for name, pts in p["tput"].items():
            f = os.path.join(data, f"tput-{r['dir']}-{name}.dat")
            open(f, "w").write("".join(f"{x} {y}\n" for x, y in pts))
            style = "lines dt 2 lw 1" if name == "offered" else "lines lw 2"
            tput_plots.append(f"'{f}' using 1:2 with {style} title '{label} {name}'")
    marks = ""
    for r in results:  # the outage's start and end, as vertical lines on the throughput plot
        m = r["meta"]
        for at in (m.get("outage_down_ms"), m.get("outage_up_ms")):
            if at:
                marks += f"set arrow from {(at - m['t_warm_ms']) / 1000},graph 0 to {(at - m['t_warm_ms']) / 1000},graph 1 nohead dt 3 lc rgb 'red'\n"
    script = os.path.join(data, "plot.gp")
    with open(script, "w") as f:
        f.write(f"""set terminal svg size 1100,900 dynamic font 'sans,11' background rgb 'white'
set output '{os.path.join(out, "plot.svg")}'
set multiplot layout 2,1
set title 'Latency, EventDateTime -> receipt (cumulative share of the window events)'
set xlabel 'latency (ms)'; set ylabel 'share of events'; set yrange [0:1]; set grid
set key bottom right
plot {', '.join(cdf_plots) or "NaN title 'no deliveries'"}
set title 'Throughput over time (events/s; 0 s = the window starts; dashed: offered; red: the outage)'
set xlabel 'seconds'; set ylabel 'events/s'; set autoscale y; set yrange [0:*]
{marks}
set key top right
plot {', '.join(tput_plots) or "NaN title 'no data'"}
unset multiplot
""")
    if gp is None:
        print("  gnuplot not found: plot.svg not drawn (script in plot-data/plot.gp)", file=sys.stderr)
        return
    subprocess.run([gp, script], check=False)


def final(out, command):
    results = []
    for d in sorted(os.listdir(out)):
        r = load_json(os.path.join(out, d, "result.json"))
        if r:
            r["dir"] = d
            r["meta"].update(load_json(os.path.join(out, d, "role.json"), {}))
            results.append(r)
    if not results:
        sys.exit("report: no phase results in " + out)
    order = {"run": 0, "step": 1, "half": 2}
    results.sort(key=lambda r: (r["meta"]["subject"] != "relay", order.get(r["meta"].get("role"), 0),
                                r["meta"]["rate"]))
    relay, peer = pick(results, "relay"), pick(results, "nodered")
    report = {"scenario": results[0]["meta"]["scenario"], "command": command, "machine": machine(),
              "phases": results, "relay": relay and relay["dir"], "nodered": peer and peer["dir"],
              "comparison": comparison(relay, peer) if relay and peer else None}
    for subject in ("relay", "nodered"):
        mine = [r["meta"] for r in results if r["meta"]["subject"] == subject and r["meta"].get("max_rate") is not None]
        if mine:
            report[f"{subject}_max_rate"] = mine[-1]["max_rate"]
            report[f"{subject}_max_rate_bounded"] = bool(mine[-1].get("bounded"))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    md = markdown(report, results)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(md)
    write_plot(out, [r for r in (relay, peer) if r])
    print(md)


def markdown(report, results):
    m = report["machine"]
    lines = [f"# bench/run {report['scenario']}", "",
             f"`{report['command']}` — {m['date']}, {m['nproc']} cores ({m['cpu']}), kernel {m['kernel']}.",
             "csusim, mosquitto and the subject share the machine. Latency is EventDateTime → first receipt; "
             "lost counts every event generated up to the window's end that never arrived, after the drain.", ""]
    lines += table(results)
    lines.append("")
    for r in results:
        role = r["meta"].get("role")
        notes = []
        if role == "step":
            notes.append(f"find-max step: {'kept up' if r['meta'].get('passed') else r['meta'].get('reason')}")
        if role == "half":
            notes.append("half the max rate (the latency target's rate)")
        if r["drain"] and not r["drain"].get("drained", True):
            notes.append(f"not drained after {r['drain'].get('secs')} s: {r['drain'].get('missing')}")
        if r["meta"].get("crashes"):
            notes.append(f"{r['meta']['crashes']} kill -9 and restarts")
        res = r["resources"]
        if "csusim_cpu_pct" in res:
            notes.append(f"csusim CPU {res['csusim_cpu_pct']} %" +
                         (f", mosquitto {res['mosquitto_cpu_pct']} %" if "mosquitto_cpu_pct" in res else ""))
        for name, s in r["sinks"].items():
            if s.get("unknown") or s.get("mismatched"):
                notes.append(f"{name}: {s.get('unknown', 0)} unknown, {s.get('mismatched', 0)} mismatched")
        if r.get("outage"):
            o = r["outage"]
            notes.append(f"outage {o['down_s']} s: backlog {fmt(o['backlog_at_recovery'])} at recovery, drained in "
                         f"{fmt(o.get('drain_s'))} s at {fmt(o.get('drain_per_s'))}/s = {fmt(o.get('drain_vs_offered'))}× "
                         f"the offered {fmt(o['offered_per_s'])}/s (target ≥ 2×); peak RSS {o['peak_rss_mb']} MB "
                         f"vs limits.memory_mb {o['memory_mb_limit']}")
        if notes:
            lines.append(f"- {r['dir']}: " + "; ".join(notes))
    for subject in ("relay", "nodered"):
        if f"{subject}_max_rate" in report:
            bound = " (a lower bound: no step broke within --max-steps)" if report[f"{subject}_max_rate_bounded"] else ""
            lines.append(f"- {subject} max rate that kept up: {fmt(report[f'{subject}_max_rate'])} events/s{bound}")
    c = report.get("comparison")
    if c:
        parts = [f"{k.replace('_', ' ')} {v}" for k, v in c.items() if k != "sink"]
        lines.append(f"- csurelay ÷ Node-RED ({c['sink']}): " + ", ".join(parts) +
                     " (throughput: higher is better for csurelay; latency: lower is better)")
    checks = targets(report, results)
    if checks:
        lines += ["", "Targets (issue 7):", ""] + [f"- {'met' if ok else '**missed**'}: {text}" for ok, text in checks]
    lines += ["", "![latency and throughput](plot.svg)", ""]
    return "\n".join(lines)


def targets(report, results):
    """[(met, text)]: the issue's targets that this run measured."""
    out = []
    relay = [r for r in results if r["meta"]["subject"] == "relay"]
    scenario = report["scenario"]
    for r in relay:
        m, res = r["meta"], r["resources"]
        lost = sum(s["lost"] for s in r["sinks"].values())
        if m.get("role") != "step":
            out.append((lost == 0, f"{r['dir']}: 0 lost (lost {lost})"))
        if scenario == "steady" and m.get("role") == "half":
            worst = max(s["latency_ms"]["p99"] or 0 for s in r["sinks"].values())
            goal = m["poll_ms"] + 100
            out.append((worst <= goal, f"p99 ≤ poll interval + 100 ms = {goal} ms at half the max rate "
                                       f"({fmt(m['rate'])}/s): worst sink p99 {fmt(worst)} ms"))
        if scenario == "many-csus":
            cpu, rss = res.get("cpu_pct"), res.get("peak_rss_mb")
            out.append((cpu is not None and cpu <= 50, f"relay CPU ≤ 50 % of one core: {fmt(cpu)} %"))
            out.append((rss is not None and rss <= 64, f"relay RSS ≤ 64 MB: {fmt(rss)} MB"))
        if r.get("outage"):
            o = r["outage"]
            out.append((o["rss_within_limit"], f"RSS within limits.memory_mb {o['memory_mb_limit']} MB during the "
                                               f"outage: peak {o['peak_rss_mb']} MB"))
            ratio = o.get("drain_vs_offered")
            out.append((ratio is not None and ratio >= 2, f"backlog drains at ≥ 2× the offered rate: {fmt(ratio)}×"))
    if scenario == "steady" and "relay_max_rate" in report:
        out.append((report["relay_max_rate"] >= 10000, f"≥ 10,000 events/s end to end with 0 lost: "
                                                       f"{fmt(report['relay_max_rate'])} events/s kept up"))
    c = report.get("comparison") or {}
    if "max_rate_ratio" in c:
        out.append((c["max_rate_ratio"] >= 20, f"≥ 20× Node-RED's throughput: {c['max_rate_ratio']}×"))
    return out


def ingress(out, command):
    """report.* of the ingress scenario from what bench/ingress_bench.sh printed."""
    import re
    text = open(os.path.join(out, "ingress.txt")).read()

    def num(pattern):
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None
    r = {"scenario": "ingress", "command": command, "machine": machine(),
         "upserts_per_s": num(r"upserts/s ([0-9.]+)"),
         "answers": {k: int(v) for k, v in re.findall(r"answers\s+(\d{3}): (\d+)", text)},
         "latency_ms": {q: num(rf"latency ms.*\b{q} ([0-9.]+)") for q in ("p50", "p90", "p99", "max")},
         "customers": {k: num(rf"customers.*\b{k} (\d+)") for k in ("created", "updated", "emails")},
         "cpu_pct": num(r"CPU ([0-9.]+)% of one core"), "peak_rss_mb": num(r"RSS ([0-9.]+) MB"),
         "output": text}
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(r, f, indent=1)
    lat, m = r["latency_ms"], r["machine"]
    md = [f"# bench/run ingress", "", f"`{command}` — {m['date']}, {m['nproc']} cores ({m['cpu']}).",
          "Closed loop (bench/ingress_bench.sh, issue 6): wrk keeps its connections busy; the rate is what the relay answers.", "",
          "| upserts/s | answers | p50 ms | p90 ms | p99 ms | max ms | CPU % (1 core) | RSS MB |", "|---|---|---|---|---|---|---|---|",
          "| " + " | ".join([fmt(r["upserts_per_s"]), ", ".join(f"{k}: {v:,}" for k, v in r["answers"].items()),
                            fmt(lat["p50"]), fmt(lat["p90"]), fmt(lat["p99"]), fmt(lat["max"]),
                            fmt(r["cpu_pct"]), fmt(r["peak_rss_mb"])]) + " |",
          "", "```", text.strip(), "```", "", "![answer latency](plot.svg)", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(md))
    data = os.path.join(out, "plot-data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "latency.dat"), "w") as f:
        f.write("".join(f"{q} {v}\n" for q, v in lat.items() if v is not None))
    with open(os.path.join(data, "plot.gp"), "w") as f:
        f.write(f"""set terminal svg size 700,450 dynamic font 'sans,11' background rgb 'white'
set output '{os.path.join(out, "plot.svg")}'
set title 'POST /v1/customers answer latency ({fmt(r["upserts_per_s"])} upserts/s)'
set style fill solid 0.6; set boxwidth 0.6; set yrange [0:*]; set ylabel 'ms'; set grid y
plot '{os.path.join(data, "latency.dat")}' using 0:2:xtic(1) with boxes notitle
""")
    if shutil.which("gnuplot"):
        subprocess.run(["gnuplot", os.path.join(data, "plot.gp")], check=False)
    print("\n".join(md))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["phase", "verdict", "final", "ingress"])
    p.add_argument("dir")
    p.add_argument("--p99-max", type=int, default=5000)
    p.add_argument("--command", default="bench/run")
    a = p.parse_args()
    if a.what == "phase":
        phase(a.dir)
    elif a.what == "verdict":
        ok, why = verdict(a.dir, a.p99_max)
        print(why)
        sys.exit(0 if ok else 1)
    elif a.what == "ingress":
        ingress(a.dir, a.command)
    else:
        final(a.dir, a.command)


if __name__ == "__main__":
    main()
