-- wrk script for bench/wizard_ack.py: one wrk thread = one connection = one simulated Slack user.
--
--   wrk -t N -c N -d SECONDS -s bench/wizard_ack.lua URL -- REQ_DIR THINK_MS FROM_US TO_US OUT_FILE BUTTON_MS
--
-- REQ_DIR/NNN.req holds user NNN's cycle of pre-signed Slack deliveries, one per line:
-- "kind <TAB> timestamp <TAB> signature <TAB> urlencoded body". Each thread replays its user's cycle in order,
-- one request at a time (a user never has two clicks in flight), waiting THINK_MS (uniform 0.5x-1.5x) after
-- each answer (with THINK_MS 0: none after a submission, BUTTON_MS after a button). The very first request of a
-- thread is GET /healthz followed by a random pause, so that the users' clicks are spread out instead of all
-- landing at t=0. Latency is taken with CLOCK_MONOTONIC around
-- each request (send -> whole response read) and kept for requests sent inside [FROM_US, TO_US); done()
-- writes every kept sample to OUT_FILE as "kind latency_us ok" lines for the Python side to summarise.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC, the clock of Python's time.monotonic()
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("uid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local GONE = { "changed in another window", "finished or cancelled", "expired after", "went wrong" }

function init(args)
  local dir = args[1]
  think = tonumber(args[2])
  from_us, to_us, out_file = tonumber(args[3]), tonumber(args[4]), args[5]
  button_wait = tonumber(args[6])
  reqs, kinds = {}, {}
  local f = assert(io.open(string.format("%s/%03d.req", dir, uid), "r"))
  for line in f:lines() do
    local kind, stamp, sig, body = line:match("^(%S+)\t(%S+)\t(%S+)\t(.*)$")
    local headers = {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["User-Agent"] = "Slackbot 1.0 (+https://api.slack.com/robots)",
      ["X-Slack-Request-Timestamp"] = stamp,
      ["X-Slack-Signature"] = sig,
    }
    reqs[#reqs + 1] = wrk.format("POST", nil, headers, body)
    kinds[#kinds + 1] = kind
  end
  f:close()
  healthz = wrk.format("GET", "/healthz")
  math.randomseed(uid * 7919 + 17)
  started, pos, current, sent_at = false, 0, "start", 0
  lat, kind_of, ok_of = {}, {}, {}
  bad, gone = 0, 0
end

function request()
  sent_at = now_us()
  if not started then
    started, current = true, "start"
    return healthz
  end
  pos = pos % #reqs + 1
  current = kinds[pos]
  return reqs[pos]
end

function response(status, headers, body)
  local took = now_us() - sent_at
  local ok = 1
  if status ~= 200 then
    ok, bad = 0, bad + 1
  elseif body then
    for _, text in ipairs(GONE) do
      if body:find(text, 1, true) then
        ok, gone = 0, gone + 1
        break
      end
    end
  end
  if current ~= "start" and sent_at >= from_us and sent_at < to_us then
    lat[#lat + 1] = math.floor(took)
    kind_of[#kind_of + 1] = current
    ok_of[#ok_of + 1] = ok
  end
end

function delay()
  if current == "start" then
    return math.random(0, math.max(1, 2 * think)) -- spread the users' first clicks over a think time
  end
  if think <= 0 then
    -- flat out: a submission's answer carries the next screen, so the next click follows at once; after a
    -- button the new screen comes by views.update, which a person waits for before clicking again
    return current == "submit" and 0 or button_wait
  end
  return math.random(math.floor(think / 2), math.floor(think * 3 / 2))
end

function done(summary, latency, requests)
  local out = assert(io.open(threads[1]:get("out_file"), "w")) -- init() ran in the threads, not here
  for _, thread in ipairs(threads) do
    local l, k, o = thread:get("lat"), thread:get("kind_of"), thread:get("ok_of")
    for i = 1, #l do
      out:write(k[i], " ", l[i], " ", o[i], "\n")
    end
    out:write("#bad ", thread:get("bad"), " ", thread:get("gone"), "\n")
  end
  out:close()
end
