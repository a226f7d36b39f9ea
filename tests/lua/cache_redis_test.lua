-- nginxgen.cache.redis: both client libraries' shapes, the pool, and the fail-open breaker.
-- Fake libraries record every call; the real ones run in tests/integration/test_cache.py.

local h = require("harness")
local redis = require("nginxgen.cache.redis")

local t = h.suite()
local case, eq = t.case, h.eq

local CFG = {
    host = "127.0.0.1", port = 6379, db = 0, connect_timeout = 100, read_timeout = 200,
    pool = "nginxgen:127.0.0.1:6379:0", pool_size = 32, idle_timeout = 60000,
    errors_to_skip = 2, cooldown = 5,
}

local function with(overrides)
    local cfg = {}
    for k, v in pairs(CFG) do
        cfg[k] = v
    end
    for k, v in pairs(overrides or {}) do
        cfg[k] = v
    end
    return cfg
end

-- A client library of either shape. `script.fail` makes a command return an error;
-- `script.reused` is what get_reused_times answers; `script.store` holds SET values.
local function fake_lib(flavor, script)
    local calls = {}
    local lib = { calls = calls }
    function lib.new()
        local red = {}
        local function record(name)
            return function(_, ...)
                calls[#calls + 1] = { name, ... }
                if script.fail == name then
                    return nil, "boom"
                end
                if name == "get" then
                    local v = script.store[...]
                    return v == nil and ngx.null or v
                end
                if name == "set" then
                    local k, v = ...
                    script.store[k] = v
                end
                return "OK"
            end
        end
        for _, name in ipairs({ "connect", "set_keepalive", "close", "auth", "select", "get",
                                "set" }) do
            red[name] = record(name)
        end
        if flavor == "resty.redis" then
            red.set_timeouts = record("set_timeouts")
        else
            red.set_timeout = record("set_timeout")
        end
        function red.get_reused_times()
            return script.reused or 0
        end
        return red
    end
    return lib
end

local function names(calls)
    local out = {}
    for _, c in ipairs(calls) do
        out[#out + 1] = c[1]
    end
    return table.concat(out, " ")
end

local function client(flavor, script, cfg, clock)
    script.store = script.store or {}
    local lib = fake_lib(flavor, script)
    clock = clock or h.clock()
    return redis.new(cfg or CFG, h.fake_dict(clock), lib, flavor), lib, clock
end

case("the installed library is found, OpenResty's first", function()
    local function loader(available)
        return function(name)
            if available[name] then
                return available[name]
            end
            error("module '" .. name .. "' not found")
        end
    end
    local lib, flavor = redis.find_library(loader({ ["nginx.redis"] = "N", ["resty.redis"] = "R" }))
    eq(lib, "R") eq(flavor, "resty.redis")
    lib, flavor = redis.find_library(loader({ ["nginx.redis"] = "N" }))
    eq(lib, "N") eq(flavor, "nginx.redis")
    eq(redis.find_library(loader({})), nil, "none")
end)

case("resty.redis gets set_timeouts; nginx.redis one timeout, raised after connect", function()
    local c, lib = client("resty.redis", {})
    eq(c:get("k"), nil, "a miss")
    eq(names(lib.calls), "set_timeouts connect get set_keepalive")
    eq(table.concat(lib.calls[1], ",", 2), "100,200,200", "connect, send, read")
    c, lib = client("nginx.redis", {})
    eq(c:get("k"), nil, "a miss")
    eq(names(lib.calls), "set_timeout connect set_timeout get set_keepalive")
    eq(lib.calls[1][2], 100, "connect timeout")
    eq(lib.calls[3][2], 200, "read timeout")
end)

case("pool name, unix socket, auth and db: fresh connections only", function()
    local c, lib = client("nginx.redis", {}, with({ socket = "/run/r.sock", db = 3 }))
    c:get("k")
    eq(lib.calls[2][2], "unix:/run/r.sock", "socket")
    eq(lib.calls[2][3].pool, CFG.pool, "pool")
    eq(names(lib.calls), "set_timeout connect set_timeout select get set_keepalive")
    c, lib = client("nginx.redis", { reused = 4 }, with({ db = 3 }))
    c:get("k")
    eq(names(lib.calls), "set_timeout connect set_timeout get set_keepalive", "pooled")
end)

case("a failed command closes the connection instead of pooling it", function()
    local c, lib = client("resty.redis", { fail = "get" })
    eq(c:get("k"), false, "BYPASS")
    eq(names(lib.calls), "set_timeouts connect get close")
end)

case("ttls go out as integer digits, even past what %.14g prints", function()
    local c, lib = client("resty.redis", {})
    eq(c:set("k", "v", 31536000000), true)
    local set = lib.calls[3]
    eq(table.concat(set, " ", 2), "k v PX 31536000000")
    c:set("k", "v", 123456789012345)
    eq(lib.calls[#lib.calls - 1][5], "123456789012345")
end)

case("errors in a row skip Redis for the cool-down; one probe after it", function()
    local script = { fail = "get" }
    local c, lib, clock = client("nginx.redis", script)
    eq(c:get("k"), false) eq(c:get("k"), false)  -- errors_to_skip = 2: tripped
    local before = #lib.calls
    eq(c:get("k"), false, "skipped")
    eq(#lib.calls, before, "no connection during the cool-down")
    clock.advance(5.1)
    eq(c:usable(), true, "one request probes")
    eq(c:usable(), false, "the next waits while the probe runs")
    clock.advance(1.6)  -- a probe that never reported back lets another one try
    script.fail = nil
    eq(c:get("k"), nil, "the probe finds Redis back")
    eq(c:usable(), true, "everyone again")
    eq(c:usable(), true, "everyone again")
end)

case("after a cool-down one more failure trips again at once", function()
    local c, _, clock = client("nginx.redis", { fail = "get" })
    c:get("k") c:get("k")
    clock.advance(5.1)
    eq(c:get("k"), false, "the probe fails")
    eq(c:usable(), false, "skipped again without waiting for errors_to_skip")
end)

case("a write failure counts like a read failure", function()
    local c = client("resty.redis", { fail = "set" })
    eq(c:set("k", "v", 1000), false) eq(c:set("k", "v", 1000), false)
    eq(c:usable(), false, "tripped")
end)

return t
