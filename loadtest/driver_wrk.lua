-- pixeltrack load driver for wrk (template; loadtest/driver_wrk.py fills the
-- @NAME@ constants and writes the generated copy next to the request file).
--
-- Each wrk thread cycles through the requests of the data file from its own
-- offset. When its time or count is up it sends only GET /healthz (which is
-- never recorded) until every hit request it sent has its answer, then stops
-- and says so on stderr; the Python side then ends wrk (SIGINT), and done()
-- prints per-category counts. Answers are classified by status and body:
-- 200 GIF = pixel, 302 = valid click, 404 = refused click, "ok\n" = health.
-- The first request() of each thread is /healthz and not counted (see request),
-- and threads send /healthz until every thread has loaded its requests.

local DATA = "@DATA@"
local READY = "@READY@"             -- each thread adds a line when loaded
local DURATION = @DURATION@        -- seconds per thread, 0 = no time limit
local QUOTA = @QUOTA@              -- hit requests in all, 0 = no count limit
local RATE = @RATE@                -- requests per second in all, 0 = as fast as possible
local NTHREADS = @THREADS@
local GRACE = 5.0                  -- seconds to wait for the last answers

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } pt_timespec;
int clock_gettime(int clk, pt_timespec *ts);
]]
local ts = ffi.new("pt_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- per-thread state (globals, so that done() can read them with thread:get)
sent = {}
answered = { pixel = 0, click_ok = 0, click_bad = 0, health = 0, other = 0 }
statuses = {}
hits_sent, hits_answered, first_at, last_at = 0, 0, 0, 0

local reqs, cats, health = {}, {}, nil
local pos, quota, deadline, interval, next_slot, stopping, finished, last_progress
local primed, go, next_check = false, false, 0

function init(args)
  tid = wrk.thread:get("tid")
  -- one request a line: category TAB the raw request with each CRLF as a TAB
  -- (cheap to load, so that threads start within milliseconds of each other)
  for line in io.lines(DATA) do
    local cat, raw = string.match(line, "^([^\t]*)\t(.*)$")
    reqs[#reqs + 1] = string.gsub(raw, "\t", "\r\n")
    cats[#cats + 1] = cat
    sent[cat] = 0
  end
  health = wrk.format("GET", "/healthz", {})
  local f = io.open(READY, "a")
  f:write(tid, "\n")
  f:close()
  pos = math.floor((tid - 1) * #reqs / NTHREADS)
  quota = 0
  if QUOTA > 0 then
    quota = math.floor(QUOTA / NTHREADS)
    if tid <= QUOTA % NTHREADS then quota = quota + 1 end
  end
  interval = (RATE > 0) and (NTHREADS / RATE) or 0
  last_progress = 0
end

local function finish(t)
  if not finished then
    finished = true
    io.stderr:write(string.format("PT finished %d %d %d\n", tid, hits_sent, hits_answered))
    io.stderr:flush()
    wrk.thread:stop()
  end
end

function request()
  -- wrk calls request() once on thread 1's state before any connection, to
  -- check the request parses; that one is never sent, so it must not count.
  if not primed then
    primed = true
    return health
  end
  local t = now()
  if not go then
    -- threads are loaded one after another: wait (sending /healthz) until
    -- all are, so that they start together and the time span is shared
    if t < next_check then return health end
    next_check = t + 0.005
    local n = 0
    for _ in io.lines(READY) do n = n + 1 end
    if n < NTHREADS then return health end
    go = true
  end
  if first_at == 0 then
    first_at = t
    deadline = t + DURATION
  end
  if stopping or (QUOTA > 0 and hits_sent >= quota) or (DURATION > 0 and t >= deadline) then
    if not stopping then
      stopping = t
    end
    return health
  end
  pos = pos % #reqs + 1
  local cat = cats[pos]
  sent[cat] = sent[cat] + 1
  hits_sent = hits_sent + 1
  return reqs[pos]
end

if RATE > 0 then
  function delay()
    local t = now()
    if next_slot == nil or next_slot < t - 0.05 then next_slot = t end
    local slot = next_slot
    next_slot = next_slot + interval
    if slot <= t then return 0 end
    return math.floor((slot - t) * 1000 + 0.5)
  end
end

function response(status, headers, body)
  local t = now()
  if status == 200 and body == "ok\n" then
    answered.health = answered.health + 1
  else
    hits_answered = hits_answered + 1
    last_at = t
    statuses[status] = (statuses[status] or 0) + 1
    if status == 200 then
      answered.pixel = answered.pixel + 1
    elseif status == 302 then
      answered.click_ok = answered.click_ok + 1
    elseif status == 404 then
      answered.click_bad = answered.click_bad + 1
    else
      answered.other = answered.other + 1
    end
  end
  if t - last_progress >= 1.0 then
    last_progress = t
    io.stderr:write(string.format("PT progress %d %d\n", tid, hits_answered))
    io.stderr:flush()
  end
  if stopping and (hits_answered >= hits_sent or t > stopping + GRACE) then
    finish(t)
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for cat, n in pairs(thread:get("sent")) do print("PT sent " .. cat .. " " .. n) end
    for name, n in pairs(thread:get("answered")) do print("PT answered " .. name .. " " .. n) end
    for code, n in pairs(thread:get("statuses")) do print("PT status " .. code .. " " .. n) end
    print(string.format("PT span %.6f %.6f", thread:get("first_at"), thread:get("last_at")))
  end
  local e = summary.errors
  print(string.format("PT errors connect %d read %d write %d timeout %d", e.connect, e.read, e.write, e.timeout))
  print(string.format("PT latency %d %d %d %d", latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
