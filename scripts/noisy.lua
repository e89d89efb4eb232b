-- wrk script: one side of the noisy-neighbour scenario (scripts/noisy.sh).
--
--   wrk -t1 -c4  -d10s --timeout 15s -s scripts/noisy.lua http://127.0.0.1:PORT -- quiet 1
--   wrk -t2 -c32 -d10s --timeout 15s -s scripts/noisy.lua http://127.0.0.1:PORT -- flood 8
--
-- quiet: POST /ingest/quiet-N, bodies of 1..4 KiB (uniform, Content-Length).
-- flood: POST /ingest/flood-N, bodies of 3 MiB and 12 MiB in turn (Content-Length): under
--        the pool, a 3 MiB body is charged its 10 MiB Huge slab, a 12 MiB one 12 MiB.
-- N runs over 0..TENANTS-1 (default 1 for quiet, 8 for flood), so each tenant gets both
-- sizes.
--
-- Each thread builds its deck once, in init(), and deals it in turn: wrk sends prepared
-- strings and builds nothing while it measures. The flood's deck is 8 requests a thread
-- (about 60 MiB), the quiet one's 200.
--
-- done() prints one machine-readable line:
--   wrk-summary group=.. requests=.. duration_us=.. p50_us=.. p99_us=.. max_us=.. ok=.. refused=.. failed=.. socket_errors=..
-- (ok: 200; refused: 429 or 503 with a retry hint; failed: any other status).

local KIB, MIB = 1024, 1024 * 1024

-- NOISY_LUA_FLOOD_DELAY_MS (set by noisy.sh on the flood's command line only, from
-- NOISY_FLOOD_DELAY_MS): each connection waits this long before each request, so the
-- client, not the server, sets the flood's pace. Unset, no delay() is defined and wrk
-- sends each request as soon as the last one is answered.
local flood_delay = tonumber(os.getenv("NOISY_LUA_FLOOD_DELAY_MS") or "")
if flood_delay then
    function delay()
        return flood_delay
    end
end

local threads = {}
local next_id = 1

function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

-- Park-Miller: exact in LuaJIT's doubles, deterministic per thread.
local state = 1
local function rand()
    state = (state * 16807) % 2147483647
    return state
end

local deck = {}
local dealt = 0
local group = "quiet"

function init(args)
    group = args[1] or "quiet"
    local id = id or 1
    state = 7919 * id
    local block = {}
    for i = 1, 4 * KIB do
        block[i] = string.char(rand() % 256)
    end
    block = table.concat(block)

    if group == "quiet" then
        local tenants = tonumber(args[2]) or 1
        for slot = 1, 200 do
            local len = KIB + rand() % (3 * KIB + 1)
            local path = string.format("/ingest/quiet-%d", (slot + id) % tenants)
            deck[slot] = wrk.format("POST", path, {}, block:sub(1, len))
        end
    elseif group == "flood" then
        local tenants = tonumber(args[2]) or 8
        local big = string.rep(block, 3 * MIB / (4 * KIB))
        local huge = string.rep(block, 12 * MIB / (4 * KIB))
        for slot = 1, 8 do
            local path = string.format("/ingest/flood-%d", (slot + id) % tenants)
            deck[slot] = wrk.format("POST", path, {}, slot % 2 == 0 and big or huge)
        end
    else
        error("noisy.lua: the group is quiet or flood, not " .. tostring(group))
    end
    ok, refused, failed = 0, 0, 0
end

function request()
    dealt = dealt % #deck + 1
    return deck[dealt]
end

function response(status, headers, body)
    if status == 200 then
        ok = ok + 1
    elseif status == 429 or status == 503 then
        refused = refused + 1
    else
        failed = failed + 1
    end
end

function done(summary, latency, requests)
    local totals = { ok = 0, refused = 0, failed = 0 }
    local name = "?"
    for _, thread in ipairs(threads) do
        for key in pairs(totals) do
            totals[key] = totals[key] + (thread:get(key) or 0)
        end
        name = thread:get("group") or name
    end
    local e = summary.errors
    io.write(string.format(
        "wrk-summary group=%s requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d ok=%d refused=%d failed=%d socket_errors=%d\n",
        name, summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        latency.max, totals.ok, totals.refused, totals.failed,
        e.connect + e.read + e.write + e.timeout))
end
