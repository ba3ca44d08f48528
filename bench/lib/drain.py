#!/usr/bin/env python3
"""bench/run's drain: after the measured window ends, waits (at most --max-s seconds) until every
event csusim committed before --until-ms has reached every sink of the run (trigger and webhook
by the ledger's diff, MQTT by the recorder's lines against the ledger's ids). An event still
missing when it gives up is lost, one delivered during the drain is late. Writes --out (JSON) and
prints a progress line every 5 s.

With --catch-up it is the warm-up's end instead: it waits until the subject has worked off the
events of its own start-up: no event committed in the 5 s before --behind-ms ago is missing
anywhere. Exits 1 if that does not happen within --max-s (a fault plan may keep it from happening).

Usage: drain.py --base URL --until-ms MS --sinks cij,webhook,mqtt --out FILE [--mqtt-file FILE]
                [--max-s 30]
       drain.py --catch-up --behind-ms 3000 --base URL --sinks ... [--mqtt-file FILE] [--max-s 60]
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def get(url, tries=10):
    """The answer of csusim; a reset or a refusal (an overloaded subject can hold every connection
    csusim accepts) is tried again a second later."""
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.read()
        except (ConnectionError, urllib.error.URLError, TimeoutError):
            if attempt == tries - 1:
                raise
            time.sleep(1)


def missing(base, sink, until_ms, from_ms=0):
    d = json.loads(get(f"{base}/ledger/diff?sink={sink}&from_ms={from_ms}&until_ms={until_ms}"))
    return d["missing_count"]


class MqttRemaining:
    """The ids committed before until_ms that the recorder has not seen yet."""

    def __init__(self, base, until_ms, path):
        rows = get(f"{base}/ledger/receipts?sink=webhook:__every_event__&until_ms={until_ms}")
        self.left = {line.rsplit(b",", 1)[1] for line in rows.splitlines()[1:] if line}
        self.path, self.offset = path, 0

    def sample(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += end
        for line in chunk[:end].splitlines():
            parts = line.split(b"\t")
            if len(parts) == 3:
                self.left.discard(parts[1])
        return len(self.left)


def lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def catch_up(a, sinks):
    """0 once no sink misses an event committed in the 5 s before a.behind_ms ago (older ones
    may be dead letters of a fault plan), 1 after a.max_s."""
    start = time.time()
    while time.time() - start < a.max_s:
        until = int(time.time() * 1000) - a.behind_ms
        behind = {}
        if "cij" in sinks:
            behind["trigger"] = missing(a.base, "trigger", until, until - 5000)
        if "webhook" in sinks:
            behind["webhook"] = missing(a.base, "webhook:audit", until, until - 5000)
        if "mqtt" in sinks:
            d = json.loads(get(f"{a.base}/ledger/diff?sink=webhook:__every_event__&until_ms={until}"))
            behind["mqtt"] = max(0, d["expected"] - lines(a.mqtt_file))
        if not any(behind.values()):
            return 0
        time.sleep(0.5)
    print(f"  not caught up after {a.max_s:.0f} s: missing {behind}", file=sys.stderr)
    return 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--catch-up", action="store_true")
    p.add_argument("--behind-ms", type=int, default=3000)
    p.add_argument("--base", required=True)
    p.add_argument("--until-ms", type=int, default=0)
    p.add_argument("--sinks", required=True)
    p.add_argument("--out", default="")
    p.add_argument("--mqtt-file", default="")
    p.add_argument("--max-s", type=float, default=30)
    a = p.parse_args()
    sinks = a.sinks.split(",")
    if a.catch_up:
        sys.exit(catch_up(a, sinks))
    start = time.time()
    mq = MqttRemaining(a.base, a.until_ms, a.mqtt_file) if "mqtt" in sinks else None
    left, shown = {}, 0
    while True:
        if "cij" in sinks:
            left["trigger"] = missing(a.base, "trigger", a.until_ms)
        if "webhook" in sinks:
            left["webhook"] = missing(a.base, "webhook:audit", a.until_ms)
        if mq:
            left["mqtt"] = mq.sample()
        waited = time.time() - start
        if not any(left.values()) or waited >= a.max_s:
            break
        if waited - shown >= 5:
            shown = waited
            print(f"  draining {waited:.0f}s: still missing " +
                  ", ".join(f"{k} {v:,}" for k, v in left.items() if v), file=sys.stderr, flush=True)
        time.sleep(1)
    result = {"drained": not any(left.values()), "secs": round(time.time() - start, 1), "missing": left}
    with open(a.out, "w") as f:
        json.dump(result, f)
    state = "drained" if result["drained"] else "NOT drained"
    print(f"  {state} after {result['secs']} s" + ("" if result["drained"] else f": {left}"),
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
