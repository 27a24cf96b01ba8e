-- wrk: book an appointment (tests/load/bench.py). The body is VETIFY_BENCH_BODY with each
-- request's start moved to a slot of its own (thread by thread, ten minutes apart, from a
-- year ahead), so that no two bookings of the run collide.
local counter = 0
local threads = {}
local base = os.time() + 366 * 24 * 3600

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  -- Added to the command line's headers (the token): wrk.format's own table would replace them.
  wrk.headers["Content-Type"] = "application/json"
  template = os.getenv("VETIFY_BENCH_BODY")
  step = tonumber(os.getenv("VETIFY_BENCH_THREADS"))
end

local function at(seconds)
  return os.date("!%Y-%m-%dT%H:%M:%S+00:00", seconds)
end

function request()
  local slot = counter * step + id
  counter = counter + 1
  local starts = base + slot * 600
  local body = template
    :gsub('"starts_at": "[^"]*"', '"starts_at": "' .. at(starts) .. '"')
    :gsub('"ends_at": "[^"]*"', '"ends_at": "' .. at(starts + 600) .. '"')
  return wrk.format("POST", nil, nil, body)
end
