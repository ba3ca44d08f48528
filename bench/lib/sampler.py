#!/usr/bin/env python3
"""bench/run's sampler: once a second until SIGTERM, one JSON line into --out with the ledger's
counts (generated, trigger, webhook), the MQTT recorder's lines, CPU time and RSS of the subject
(csurelay or Node-RED; its pid is re-read from --pidfile every time, so the crash scenario's
restarts are followed and the CPU of every incarnation adds up), csusim and mosquitto, and, for
the relay, a few gauges of its /metrics. Prints a progress line every --every seconds.

Usage: sampler.py --base URL --out FILE --pidfile FILE [--metrics-file FILE] [--mqtt-file FILE]
                  [--pids name=PID ...] [--t0-ms MS] [--every 5] [--label relay]
"""
import argparse
import json
import os
import signal
import sys
import time
import urllib.request

HZ = os.sysconf("SC_CLK_TCK")


def get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except Exception:  # a restarting relay or a busy emulator: this sample goes without
        return None


def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class CpuOf:
    """CPU ticks of a process that may be replaced: the ticks of the pids that ended are kept."""

    def __init__(self):
        self.done, self.pid, self.last = 0, None, 0

    def sample(self, pid):
        if pid != self.pid:
            self.done += self.last
            self.pid, self.last = pid, 0
        t = proc_ticks(pid) if pid else None
        if t is not None:
            self.last = t
        return self.done + self.last


class LineCount:
    """Lines appended to a file so far, read incrementally."""

    def __init__(self, path):
        self.path, self.offset, self.lines = path, 0, 0

    def sample(self):
        if not self.path or not os.path.exists(self.path):
            return 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        self.lines += chunk.count(b"\n")
        return self.lines


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def relay_gauges(metrics_file):
    """live events and the largest cursor lag from the relay's /metrics (its URL in the file)."""
    try:
        with open(metrics_file) as f:
            url = f.read().strip()
    except OSError:
        return {}
    text = get(url) if url else None
    if text is None:
        return {}
    live, lag = None, 0.0
    for line in text.decode().splitlines():
        if line.startswith("csurelay_live_events "):
            live = float(line.split()[1])
        elif line.startswith("csurelay_cursor_lag_seconds"):
            lag = max(lag, float(line.split()[-1]))
    return {"live_events": live, "lag_s": lag}


def ledger_counts(base):
    body = get(base + "/ledger")
    if body is None:
        return None
    d = json.loads(body)
    hook = d.get("webhook", {}).get("audit", {})
    return {"generated": d["generated"]["total"], "trigger": d["trigger"]["unique"],
            "webhook": hook.get("unique", 0)}


def progress(label, s, prev, t0_ms):
    el = (s["t_ms"] - t0_ms) / 1000.0
    dt = max(0.001, (s["t_ms"] - prev["t_ms"]) / 1000.0) if prev else 1
    cpu = 100.0 * (s["cpu"] - prev["cpu"]) / HZ / dt if prev else 0
    parts = [f"[{label}] t={el:5.0f}s offered {s['generated']:,}"]
    for k in ("webhook", "mqtt", "trigger"):
        if s.get(k):
            parts.append(f"{k} {s[k]:,}")
    parts.append(f"| CPU {cpu:3.0f}% RSS {s['rss_kb'] // 1024} MB")
    if s.get("lag_s") is not None and "lag_s" in s:
        parts.append(f"lag {s['lag_s']:.0f}s")
    print(" ".join(parts), file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--metrics-file", default="")
    p.add_argument("--mqtt-file", default="")
    p.add_argument("--pids", nargs="*", default=[])
    p.add_argument("--t0-ms", type=int, default=int(time.time() * 1000))
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--label", default="relay")
    a = p.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    others = dict(x.split("=", 1) for x in a.pids)
    cpu, mqtt, prev, n = CpuOf(), LineCount(a.mqtt_file), None, 0
    with open(a.out, "a") as out:
        while not stop:
            tick = time.time()
            counts = ledger_counts(a.base)
            pid = read_pid(a.pidfile)
            if counts is not None:
                s = dict(counts, t_ms=int(tick * 1000), mqtt=mqtt.sample(), cpu=cpu.sample(pid),
                         rss_kb=proc_rss_kb(pid) or 0, pid=pid)
                for name, opid in others.items():
                    s["cpu_" + name] = proc_ticks(opid)
                if a.metrics_file:
                    s.update(relay_gauges(a.metrics_file))
                out.write(json.dumps(s) + "\n")
                out.flush()
                if n % a.every == 0:
                    progress(a.label, s, prev, a.t0_ms)
                prev, n = s, n + 1
            time.sleep(max(0.05, 1.0 - (time.time() - tick)))


if __name__ == "__main__":
    main()
