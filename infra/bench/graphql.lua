-- wrk script of infra/bench.sh: POSTs one GraphQL request (BENCH_BODY, JSON) with an
-- optional bearer token (BENCH_TOKEN). With BENCH_METERS=N and BENCH_METER_PREFIX=P, each
-- request asks for a random meter P000000..P(N-1) instead (BENCH_BODY's "@METER@" is
-- replaced). Responses that are not 200 or carry GraphQL "errors" are counted and
-- printed by done() as "bench_errors <n>".

local body = os.getenv("BENCH_BODY") or error("BENCH_BODY is not set")
local token = os.getenv("BENCH_TOKEN")
local meters = tonumber(os.getenv("BENCH_METERS") or "0")
local prefix = os.getenv("BENCH_METER_PREFIX") or ""

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
if token ~= nil and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
end

local threads = {}

function setup(thread)
    thread:set("errors", 0)
    table.insert(threads, thread)
end

function init(args)
    errors = 0
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

if meters > 0 then
    function request()
        local meter = prefix .. string.format("%06d", math.random(0, meters - 1))
        return wrk.format(nil, nil, nil, (body:gsub("@METER@", meter)))
    end
end

function response(status, headers, answer)
    if status ~= 200 or answer:find('"errors"', 1, true) then
        errors = errors + 1
    end
end

function done(summary, latency, requests)
    local total = 0
    for _, thread in ipairs(threads) do
        total = total + (thread:get("errors") or 0)
    end
    io.write(string.format("bench_errors %d\n", total))
    io.write(string.format("bench_p50_us %d\nbench_p99_us %d\nbench_requests %d\nbench_duration_us %d\n",
        latency:percentile(50), latency:percentile(99), summary.requests, summary.duration))
end
