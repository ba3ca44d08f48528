-- wrk script for bench/ingress_bench.sh: POST /v1/customers with a bearer token, cycling through
-- DISTINCT emails (bench.<n>@example.com), so the first pass creates customers and every later
-- pass updates them (a mapped account: one PATCH, no search). Each thread takes its own share of
-- the cycle. done() prints the answers by status and the latency percentiles.
local distinct = tonumber(os.getenv("DISTINCT") or "2000")
local token = os.getenv("INGRESS_TOKEN") or ""
local threads = {}

-- In wrk's main state: each thread gets its index (tid) and the thread count (stride) as globals.
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
  for _, t in ipairs(threads) do
    t:set("stride", #threads)
  end
end

local counter = 0
local statuses = {}

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  local i = (counter * stride + tid) % distinct
  counter = counter + 1
  local body = string.format(
    '{"email":"bench.%d@example.com","firstName":"Bench","lastName":"User%d",' ..
    '"phone":"+4520%06d","optIn":true,"currency":"DKK","language":"da",' ..
    '"address":{"street":"Banegaardsgade %d","city":"Aarhus","zip":"8000","country":"DNK"}}',
    i, i, i, i % 200 + 1)
  return wrk.format(nil, "/v1/customers", nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  -- kept as "status=count" pairs so done() can read them through thread:get
  local text = ""
  for s, c in pairs(statuses) do
    text = text .. s .. "=" .. c .. " "
  end
  wrk.thread:set("statuses", text)
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for s, c in string.gmatch(thread:get("statuses") or "", "(%d+)=(%d+)") do
      total[s] = (total[s] or 0) + tonumber(c)
    end
  end
  local parts = {}
  for s, c in pairs(total) do
    table.insert(parts, s .. ": " .. c)
  end
  table.sort(parts)
  io.write(string.format("answers  %s\n", table.concat(parts, ", ")))
  io.write(string.format("upserts/s %.0f (%d answers in %.1f s, %d socket errors)\n",
    summary.requests / (summary.duration / 1e6), summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("latency ms p50 %.1f p90 %.1f p99 %.1f max %.1f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
