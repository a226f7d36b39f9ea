-- Unit tests for nginxgen.metrics (registry, exposition, init), run inside nginx by
-- test_lua_suites.py, whose config declares lua_shared_dict nginxgen_metrics.

local t = require("harness")
local registry = require("nginxgen.metrics.registry")
local exposition = require("nginxgen.metrics.exposition")

local s = t.suite()
local eq, ok, contains, fails = t.eq, t.ok, t.contains, t.fails

local ROUTES = {
    ["/api/"] = { service = "carts" },
    ["/c/"] = { service = "carts", cache = true },
    ["/v/"] = { service = "shop", versions = true },
}

-- A fake dict with `expire`, and a switch that makes incr fail like a full dict.
local function dict(clock)
    local d = t.fake_dict(clock or t.clock())
    d.refuse = false
    local incr = d.incr
    function d.incr(self, k, by, init, ttl)
        if d.refuse then
            return nil, "no memory"
        end
        return incr(self, k, by, init, ttl)
    end
    function d.expire(self, k, ttl)
        local v = self:get(k)
        if v == nil then
            return nil, "not found"
        end
        return self:set(k, v, ttl)
    end
    return d
end

local function no_ctx()
    error("ngx.ctx must not be read for this route")
end

-- One request: what ngx.var would say about it (observe's arguments but status,
-- seconds and ctx), and the var table it reads $upstream_status from after retries.
local function req(route, addr, rt, ustatus)
    return { route, addr, rt, { upstream_status = ustatus } }
end

local function observe(reg, q, status, seconds, ctx)
    return reg:observe(q[1], status, seconds, q[2], q[3], q[4], ctx)
end

local function new(cfg, cache_result)
    cfg = cfg or {}
    cfg.routes = cfg.routes or ROUTES
    return registry.new(cfg, cache_result)
end

s.case("label values are escaped as the text format wants", function()
    local esc = exposition.escape
    eq(esc("/api/"), "/api/")
    eq(esc('a"b'), 'a\\"b')
    eq(esc("a\\b"), "a\\\\b")
    eq(esc("a\nb"), "a\\nb")
    eq(esc('\\"\n'), '\\\\\\"\\n')
    eq(esc("caf\195\169 | x"), "caf\195\169 | x", "UTF-8 and bars unchanged")
    eq(esc(42), "42")
end)

s.case("the request path writes no dict; a flush writes exact counts once", function()
    local reg = new()
    for _ = 1, 7 do
        observe(reg, req("/api/", "10.0.0.1:80", "0.003"), 200, 0.004, no_ctx)
    end
    observe(reg, req("/api/", "10.0.0.1:80", "0.2"), 502, 0.3, no_ctx)
    local d = dict()
    eq(#d:get_keys(0), 0)
    reg:flush(d, 1000)
    eq(d:get('r|route="/api/",service="carts",version="default"|2xx'), 7)
    eq(d:get('r|route="/api/",service="carts",version="default"|5xx'), 1)
    eq(d:get('d|route="/api/",service="carts"|0.005'), 7)
    eq(d:get('d|route="/api/",service="carts"|0.5'), 1)
    eq(d:get('u|route="/api/",service="carts"|0.005'), 7)
    eq(d:get('u|route="/api/",service="carts"|0.5'), 1)
    eq(d:get('p|service="carts",peer="10.0.0.1:80"|2xx'), 7)
    eq(d:get('p|service="carts",peer="10.0.0.1:80"|5xx'), 1)
    ok(math.abs(d:get('d|route="/api/",service="carts"|sum') - 0.328) < 1e-9, "duration sum")
    reg:flush(d, 1001)
    eq(d:get('r|route="/api/",service="carts",version="default"|2xx'), 7, "no double count")
    observe(reg, req("/api/", "10.0.0.1:80", "0.003"), 200, 0.004, no_ctx)
    reg:flush(d, 1002)
    eq(d:get('r|route="/api/",service="carts",version="default"|2xx'), 8)
end)

s.case("counts the dict refuses stay for the next flush", function()
    local reg = new()
    local d = dict()
    observe(reg, req("/api/", "10.0.0.1:80", "0.001"), 200, 0.001, no_ctx)
    d.refuse = true
    ok(reg:flush(d, 1000) > 0, "the flush says counts were kept")
    eq(d:get('r|route="/api/",service="carts",version="default"|2xx'), nil)
    observe(reg, req("/api/", "10.0.0.1:80", "0.001"), 200, 0.001, no_ctx)
    d.refuse = false
    eq(reg:flush(d, 1001), 0)
    eq(d:get('r|route="/api/",service="carts",version="default"|2xx'), 2)
    eq(d:get('p|service="carts",peer="10.0.0.1:80"|2xx'), 2)
end)

s.case("no route, unknown routes and too many of them are bounded", function()
    local reg = new()
    local d = dict()
    observe(reg, req(nil), 404, 0, no_ctx)
    observe(reg, req(""), 404, 0, no_ctx)
    observe(reg, req("/legacy/"), 200, 0, function() return {} end)
    for i = 1, 1005 do
        observe(reg, req("/x" .. i), 200, 0, function() return {} end)
    end
    reg:flush(d, 1000)
    eq(d:get('r|route="-",service="",version="default"|4xx'), 2)
    eq(d:get('r|route="/legacy/",service="",version="default"|2xx'), 1)
    eq(d:get('r|route="other",service="",version="default"|2xx'), 6, "beyond 1,000 labels")
end)

s.case("status classes: 1xx to 5xx, anything else 5xx", function()
    local reg = new()
    local d = dict()
    for _, st in ipairs({ 101, 204, 304, 499, 503, 0, 999 }) do
        observe(reg, req("/api/"), st, 0, no_ctx)
    end
    reg:flush(d, 1000)
    local base = 'r|route="/api/",service="carts",version="default"|'
    eq(d:get(base .. "1xx"), 1)
    eq(d:get(base .. "2xx"), 1)
    eq(d:get(base .. "3xx"), 1)
    eq(d:get(base .. "4xx"), 1)
    eq(d:get(base .. "5xx"), 3)
end)

s.case("each attempt counts for its own peer; non-peers are not peers", function()
    local reg = new()
    local d = dict()
    observe(reg, req("/api/", "10.0.0.1:80, 10.0.0.2:80", "0.001, 0.002", "502, 200"), 200, 0.01, no_ctx)
    observe(reg, req("/api/", "10.0.0.1:80, 10.0.0.2:80 : 10.0.0.3:81", "0.001, 0.002 : 0.004",
        "504, 503 : 200"), 200, 0.01, no_ctx)
    observe(reg, req("/api/", "[fd00::7]:8080", "0.001"), 200, 0.01, no_ctx)
    observe(reg, req("/api/", "unix:/run/app.sock", "0.001"), 200, 0.01, no_ctx)
    observe(reg, req("/api/", "carts", "0"), 502, 0.01, no_ctx) -- nginx: "no live upstreams"
    reg:flush(d, 1000)
    eq(d:get('p|service="carts",peer="10.0.0.1:80"|5xx'), 2)
    eq(d:get('p|service="carts",peer="10.0.0.2:80"|2xx'), 1)
    eq(d:get('p|service="carts",peer="10.0.0.2:80"|5xx'), 1)
    eq(d:get('p|service="carts",peer="10.0.0.3:81"|2xx'), 1)
    eq(d:get('p|service="carts",peer="[fd00::7]:8080"|2xx'), 1)
    eq(d:get('p|service="carts",peer="unix:/run/app.sock"|2xx'), 1)
    eq(d:get('p|service="carts",peer="carts"|5xx'), nil)
    ok(math.abs(d:get('u|route="/api/",service="carts"|sum') - 0.012) < 1e-9, "all attempts' time")
    eq(d:get('r|route="/api/",service="carts",version="default"|5xx'), 1)
end)

s.case("behind the Lua balancer: $upstream_addr once per peer, then the balancer's key", function()
    local clock = t.clock(1000)
    local reg = new({ peer_ttl = 600 })
    local d = dict(clock)
    local reads = 0
    local function var(addr, ustatus)
        return setmetatable({}, { __index = function(_, k)
            if k == "upstream_addr" then
                reads = reads + 1
                return addr
            end
            return k == "upstream_status" and ustatus or nil
        end })
    end
    local function balanced(key, rt, v, status)
        reg:observe("/api/", status or 200, 0.001, nil, rt, v, no_ctx, key)
    end
    -- nginx's text is the label, whatever the key looks like
    balanced("[fd00:0::7]:8080", "0.001", var("[fd00::7]:8080"))
    balanced("[fd00:0::7]:8080", "0.002", var("[fd00::7]:8080"))
    balanced("10.0.0.1:80", "0.001", var("10.0.0.1:80"))
    balanced("10.0.0.1:80", "0.001", var(nil))
    eq(reads, 2, "one read per peer")
    -- several attempts: each counts for its own peer, read every time
    balanced("10.0.0.1:80", "0.001, 0.002", var("10.0.0.2:80, 10.0.0.1:80", "502, 200"))
    balanced("10.0.0.1:80", "0.001 : 0.002", var("10.0.0.2:80 : 10.0.0.1:80", "200 : 200"))
    eq(reads, 4)
    -- a peer the balancer did not pick (no key), and an upstream it does not serve
    balanced(nil, "0.001", var("10.0.0.3:80"))
    balanced(nil, "0.001", var("10.0.0.3:80"))
    eq(reads, 6)
    -- no upstream: nothing read, no peer counted
    balanced(nil, nil, var("must not be read"))
    eq(reads, 6)
    reg:flush(d, clock())
    eq(d:get('p|service="carts",peer="[fd00::7]:8080"|2xx'), 2)
    eq(d:get('p|service="carts",peer="10.0.0.1:80"|2xx'), 4)
    eq(d:get('p|service="carts",peer="10.0.0.2:80"|5xx'), 1)
    eq(d:get('p|service="carts",peer="10.0.0.2:80"|2xx'), 1)
    eq(d:get('p|service="carts",peer="10.0.0.3:80"|2xx'), 2)
    eq(d:get('u|route="/api/",service="carts"|0.005'), 8)
    eq(d:get('r|route="/api/",service="carts",version="default"|2xx'), 9)
    -- a peer idle for peer_ttl leaves; the key finds it again through $upstream_addr
    clock.advance(700)
    reg:flush(d, clock())
    balanced("10.0.0.1:80", "0.001", var("10.0.0.1:80"))
    eq(reads, 7)
    reg:flush(d, clock())
    eq(d:get('p|service="carts",peer="10.0.0.1:80"|2xx'), 1, "a new series after it expired")
end)

s.case("beyond max_peers, peers count as peer=other; idle peers leave", function()
    local clock = t.clock(1000)
    local reg = new({ max_peers = 3, peer_ttl = 600 })
    local d = dict(clock)
    for i = 1, 5 do
        observe(reg, req("/api/", "10.0.1." .. i .. ":80", "0.001"), 200, 0, no_ctx)
    end
    reg:flush(d, clock())
    eq(d:get('p|service="carts",peer="10.0.1.3:80"|2xx'), 1)
    eq(d:get('p|service="carts",peer="10.0.1.4:80"|2xx'), nil)
    eq(d:get('p|service="carts",peer="other"|2xx'), 2)
    -- Only 10.0.1.1 keeps serving: the idle ones expire in the dict and free their places.
    for step = 1, 12 do
        clock.advance(60)
        observe(reg, req("/api/", "10.0.1.1:80", "0.001"), 200, 0, no_ctx)
        reg:flush(d, clock())
        if step == 9 then
            eq(d:get('p|service="carts",peer="10.0.1.2:80"|2xx'), 1, "still there before peer_ttl")
        end
    end
    eq(d:get('p|service="carts",peer="10.0.1.2:80"|2xx'), nil, "expired")
    eq(d:get('p|service="carts",peer="10.0.1.1:80"|2xx'), 13, "kept while it serves")
    observe(reg, req("/api/", "10.0.1.9:80", "0.001"), 200, 0, no_ctx)
    reg:flush(d, clock())
    eq(d:get('p|service="carts",peer="10.0.1.9:80"|2xx'), 1, "a new peer gets a freed place")
end)

s.case("versions: read from ngx.ctx.nginxgen_version, bounded, escaped", function()
    local reg = new({ max_versions = 2 })
    local d = dict()
    local function as(v)
        return function() return { nginxgen_version = v } end
    end
    observe(reg, req("/v/", "10.0.0.1:80", "0.001"), 200, 0, as("blue"))
    observe(reg, req("/v/", "10.0.0.2:80", "0.001"), 500, 0, as("green"))
    observe(reg, req("/v/", "10.0.0.2:80", "0.001"), 200, 0, as(nil))
    observe(reg, req("/v/", "10.0.0.2:80", "0.001"), 200, 0, as('x"y'))
    observe(reg, req("/v/", "10.0.0.2:80", "0.001"), 200, 0, as("z"))
    reg:flush(d, 1000)
    local base = 'r|route="/v/",service="shop",version='
    eq(d:get(base .. '"blue"|2xx'), 1)
    eq(d:get(base .. '"green"|5xx'), 1)
    eq(d:get(base .. '"default"|2xx'), 1)
    eq(d:get(base .. '"other"|2xx'), 2, "beyond max_versions")
    observe(reg, req("/v/", "10.0.0.1:80", "0.001"), 200, 0, as("blue"))
    reg:flush(d, 1001)
    eq(d:get(base .. '"blue"|2xx'), 2)
end)

s.case("cache results, and refusals only when no upstream answered", function()
    local reg = new({}, function(ctx) return ctx.result end)
    local d = dict()
    local function res(v)
        return function() return { result = v } end
    end
    observe(reg, req("/c/"), 200, 0, res("hit"))
    observe(reg, req("/c/"), 200, 0, res("hit"))
    observe(reg, req("/c/", "10.0.0.1:80", "0.001"), 200, 0, res("miss"))
    observe(reg, req("/c/", "10.0.0.1:80", "0.001"), 200, 0, res("bypass"))
    observe(reg, req("/c/"), 429, 0, res(nil))
    observe(reg, req("/api/"), 429, 0, no_ctx)
    observe(reg, req("/api/"), 401, 0, no_ctx)
    observe(reg, req("/api/"), 403, 0, no_ctx)
    observe(reg, req("/api/", "10.0.0.1:80", "0.001"), 403, 0, no_ctx) -- the backend's own
    observe(reg, req("/api/", "10.0.0.1:80", "0.001"), 429, 0, no_ctx)
    reg:flush(d, 1000)
    eq(d:get('c|route="/c/",service="carts"|hit'), 2)
    eq(d:get('c|route="/c/",service="carts"|miss'), 1)
    eq(d:get('c|route="/c/",service="carts"|bypass'), 1)
    eq(d:get('l|route="/c/",service="carts"|'), 1)
    eq(d:get('l|route="/api/",service="carts"|'), 1)
    eq(d:get('a|route="/api/",service="carts"|401'), 1)
    eq(d:get('a|route="/api/",service="carts"|403'), 1)
end)

s.case("the text: HELP and TYPE, cumulative buckets ending in +Inf, escaped labels", function()
    local reg = new({ routes = { ['/a|"b"\n'] = { service = "s\\1" } }, buckets = { 0.01, 0.1 } })
    local d = dict()
    observe(reg, req('/a|"b"\n', "10.0.0.1:80", "0.05"), 200, 0.005, no_ctx)
    observe(reg, req('/a|"b"\n', "10.0.0.1:80", "0.05"), 200, 0.05, no_ctx)
    observe(reg, req('/a|"b"\n', "10.0.0.1:80", "5"), 200, 7, no_ctx)
    reg:flush(d, 1000)
    d:set("#text", "cached text")
    d:set("g|worker=\"0\"|", 18)
    local text = exposition.render(d, { { "x_gauge", "gauge", "An extra.", { "x_gauge 1" } } })
    local labels = 'route="/a|\\"b\\"\\n",service="s\\\\1"'
    contains(text, "# HELP nginxgen_requests_total ")
    contains(text, "# TYPE nginxgen_requests_total counter\n")
    contains(text, "# TYPE nginxgen_request_duration_seconds histogram\n")
    contains(text, "nginxgen_requests_total{" .. labels .. ',version="default",status="2xx"} 3\n')
    local h = "nginxgen_request_duration_seconds"
    contains(text, h .. "_bucket{" .. labels .. ',le="0.01"} 1\n'
        .. h .. "_bucket{" .. labels .. ',le="0.1"} 2\n'
        .. h .. "_bucket{" .. labels .. ',le="+Inf"} 3\n'
        .. h .. "_sum{" .. labels .. "} 7.055\n"
        .. h .. "_count{" .. labels .. "} 3\n")
    contains(text, 'nginxgen_upstream_requests_total{service="s\\\\1",peer="10.0.0.1:80",status="2xx"} 3')
    contains(text, 'nginxgen_endpoints_generation{worker="0"} 18\n')
    contains(text, "# TYPE x_gauge gauge\nx_gauge 1\n")
    ok(not text:find("cached text", 1, true), "the module's own keys are not series")
end)

s.case("a histogram without observations above the last bound still ends in +Inf", function()
    local d = dict()
    d:set('d|route="/a/",service=""|0.005', 2)
    d:set('d|route="/a/",service=""|sum', 0.002)
    local text = exposition.render(d)
    contains(text, 'nginxgen_request_duration_seconds_bucket{route="/a/",service="",le="0.005"} 2\n'
        .. 'nginxgen_request_duration_seconds_bucket{route="/a/",service="",le="+Inf"} 2\n')
    contains(text, 'nginxgen_request_duration_seconds_count{route="/a/",service=""} 2\n')
end)

s.case("render yields every 1,000 keys", function()
    local d = dict()
    for i = 1, 2500 do
        d:set('l|route="/r' .. i .. '/",service=""|', 1)
    end
    local n = 0
    exposition.render(d, nil, function() n = n + 1 end)
    eq(n, 2)
end)

s.case("numbers: whole numbers exactly, others with full precision", function()
    eq(exposition.number(7), "7")
    eq(exposition.number(2 ^ 52 + 1), "4503599627370497")
    eq(exposition.number(0.1), "0.1")
    eq(exposition.number(0.1 + 0.2), "0.30000000000000004")
end)

local function metrics()
    t.fresh({ "nginxgen.metrics" })
    return require("nginxgen.metrics")
end

s.case("init names the setting that is wrong", function()
    local function refused(cfg)
        local m = metrics()
        local e = fails(function() m.init(cfg) end, "init")
        return e
    end
    contains(refused({ dict = "nope" }), "lua_shared_dict nope")
    contains(refused({ intervall = 1 }), 'unknown setting "intervall"')
    contains(refused({ interval = 0 }), "interval must be a number from 0.05 to 60")
    contains(refused({ max_peers = "9" }), 'max_peers must be a number from 1 to 100000, got "9"')
    contains(refused({ buckets = { 0.1, 0.05 } }), "increasing")
    contains(refused({ routes = { ["/a/"] = { service = 3 } } }), 'routes["/a/"].service')
    contains(refused({ routes = { ["/a/"] = { cache = "yes" } } }), 'routes["/a/"].cache')
    contains(refused({ routes = { ["/a/"] = { servise = "x" } } }), 'unknown setting "servise"')
    contains(refused("x"), "table of settings")
    local m = metrics()
    m.init({ routes = ROUTES, interval = 0.5, buckets = { 0.01, 1 } })
end)

s.case("the cache reports hit, miss and bypass from its request state", function()
    local cache = require("nginxgen.cache")
    eq(cache.result({}), nil)
    eq(cache.result({ nginxgen_cache = { hit = true, xcache = "BYPASS" } }), "hit")
    eq(cache.result({ nginxgen_cache = { xcache = "MISS" } }), "miss")
    eq(cache.result({ nginxgen_cache = { xcache = "BYPASS" } }), "bypass")
end)

return s
