-- wrk script: the ingest example's upload mix against `ingest --serve` (scripts/load.sh).
--
--   wrk -t2 -c32 -d15s --timeout 10s -s scripts/ingest.lua http://127.0.0.1:PORT [-- TENANTS]
--
-- POST /ingest/tenant-N (N in 0..TENANTS-1, default 4) with the mix of examples/ingest.rs:
-- 70% text (512 B..1.5 KiB), 25% images (150..250 KiB), 4% audio (2.5..3.5 MiB), 1% video
-- chunks (12 MiB); one upload in four chunked (Transfer-Encoding: chunked, 64 KiB chunks,
-- no Content-Length), the others with Content-Length.
--
-- Each thread builds a deck of DECK requests once, in init(), and deals them in turn: wrk
-- sends a prepared string per request and builds nothing while it measures. wrk.format
-- writes each request's head; a chunked body's framing (hex size, CRLF, last chunk) is
-- written here, since wrk has no chunked encoder.
--
-- done() prints one machine-readable line for load.sh:
--   wrk-summary requests=.. duration_us=.. p50_us=.. p99_us=.. ok=.. refused=.. failed=.. socket_errors=..
-- (ok: 200; refused: 429 or 503, the pool's "retry later"; failed: any other status).

local KIB, MIB = 1024, 1024 * 1024
local CHUNK = 64 * KIB
local DECK = 200

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

-- A 64 KiB block of pseudo-random bytes, and payloads cut from it.
local block
local function payload(len)
    local whole = math.floor(len / CHUNK)
    return string.rep(block, whole) .. block:sub(1, len - whole * CHUNK)
end

local function chunked(body)
    local parts = {}
    for at = 1, #body, CHUNK do
        local piece = body:sub(at, at + CHUNK - 1)
        parts[#parts + 1] = string.format("%x\r\n", #piece)
        parts[#parts + 1] = piece
        parts[#parts + 1] = "\r\n"
    end
    parts[#parts + 1] = "0\r\n\r\n"
    return table.concat(parts)
end

-- One upload of the mix: its size, by the shares of examples/ingest.rs (Kind::pick).
local function pick()
    local r, jitter = rand() % 100, rand()
    if r < 70 then
        return 512 + jitter % KIB
    elseif r < 95 then
        return 150 * KIB + jitter % (100 * KIB)
    elseif r < 99 then
        return 5 * MIB / 2 + jitter % MIB
    else
        return 12 * MIB
    end
end

local deck = {}
local dealt = 0

function init(args)
    local tenants = tonumber(args[1]) or 4
    state = 7919 * (id or 1)
    local bytes = {}
    for i = 1, CHUNK do
        bytes[i] = string.char(rand() % 256)
    end
    block = table.concat(bytes)

    for slot = 1, DECK do
        local len = pick()
        local path = string.format("/ingest/tenant-%d", (slot + (id or 1)) % tenants)
        local body = payload(len)
        if rand() % 4 == 0 then
            local head = wrk.format("POST", path, { ["Transfer-Encoding"] = "chunked" }, nil)
            deck[slot] = head .. chunked(body)
        else
            deck[slot] = wrk.format("POST", path, {}, body)
        end
    end
    ok, refused, failed = 0, 0, 0
end

function request()
    dealt = dealt % DECK + 1
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
    for _, thread in ipairs(threads) do
        for name in pairs(totals) do
            totals[name] = totals[name] + (thread:get(name) or 0)
        end
    end
    local e = summary.errors
    io.write(string.format(
        "wrk-summary requests=%d duration_us=%d p50_us=%d p99_us=%d ok=%d refused=%d failed=%d socket_errors=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        totals.ok, totals.refused, totals.failed, e.connect + e.read + e.write + e.timeout))
end
