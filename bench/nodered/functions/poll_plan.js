// Every poll tick: one Search per (CSU, event type) that has no poll still running, over
// (cursor - overlap, now]. The cursor starts at the instant bench/run gives (csusim's start) and
// advances to a poll's "now" once its last page is read; the overlap re-reads the last seconds so
// an event committed late within them is not missed (dedupe drops the repeats).
const b = global.get('bench');
const cursors = flow.get('cursors');
const busy = flow.get('busy');
const now = Date.now();
const out = [];
for (let csu = 0; csu < b.csus; csu++) {
  for (const type of b.types) {
    const key = csu + '|' + type;
    if (busy.has(key)) continue;
    busy.add(key);
    const from = (cursors.has(key) ? cursors.get(key) : b.startMs) - b.overlapMs;
    out.push({ poll: { key, csu, type, from, to: now, skip: 0, attempt: 0 } });
  }
}
return [out];
