-- Prometheus metrics of an nginxgen gateway, counted per worker and served from a
-- lua_shared_dict (docs/monitoring.md).
--
--   init(config)   init_by_lua (master): the routes (label → service, cache, versions)
--                  and limits; optional — without it routes are counted by label alone
--   init_worker()  init_worker_by_lua: the flush timer (every `interval`, and at exit)
--   log(key)       log_by_lua of the public server (and of every location that has its
--                  own log_by_lua): counts the request in this worker's tables; behind
--                  the Lua balancer, key is what its log hook answers (the peer picked):
--                  log(require("nginxgen.balancer").log())
--   serve()        content handler of /metrics on the loopback status listener
--
-- The request path (log) touches no shared dict: counts go to plain Lua tables
-- (nginxgen.metrics.registry) that a timer moves to the dict every second; /metrics is
-- rendered from the dict when scraped and kept for `cache_ttl` seconds, so concurrent
-- scrapes on several workers render once. The route comes from $nginxgen_route, which
-- survives error_page's internal redirects to named locations (ngx.ctx would not).
--
-- This module holds the process's one configuration and, in each worker, its one
-- registry (made by init_worker, or by the first log() when nothing called it).

local registry = require("nginxgen.metrics.registry")
local exposition = require("nginxgen.metrics.exposition")

local _M = {}

local ngx = ngx
local ngx_var = ngx.var
local ngx_now = ngx.now
local start_time = ngx.req.start_time
local type = type
local pairs = pairs
local pcall = pcall
local error = error
local tostring = tostring
local format = string.format
local byte = string.byte
local find = string.find
local sub = string.sub
local floor = math.floor
local escape = exposition.escape

-- What log() reads in one go: nginx fills a map variable with the variables it needs,
-- so the hook makes one ngx.var read instead of three. The status and the duration come
-- from resty.core's FFI getters (ngx.status, ngx.now(), ngx.req.start_time()), which a
-- compiled trace calls directly; an ngx.var read looks the name up in a hash and has
-- nginx format the value (callgrind: the read is the biggest part of the hook). The
-- map's key is a constant: a variable key would be lowercased and hashed per request.
-- http {} has:
--   map "" $nginxgen_metrics { default "RECORD"; }
-- or, when the Lua balancer runs (nginx.endpoints: dynamic) and log() is given the
-- peer it picked, BALANCED_RECORD: the peer's address is read only for a peer seen for
-- the first time, or a request that tried several.
_M.RECORD = "$nginxgen_route|$upstream_response_time|$upstream_addr"
_M.BALANCED_RECORD = "$nginxgen_route|$upstream_response_time"

local TEXT_KEY = "#text" -- the last rendered exposition, for cache_ttl seconds
local LOCK_KEY = "#render"
local DEFAULTS = {
    dict = "nginxgen_metrics",
    interval = 1,
    cache_ttl = 1,
    max_peers = registry.DEFAULTS.max_peers,
    max_versions = registry.DEFAULTS.max_versions,
    peer_ttl = registry.DEFAULTS.peer_ttl,
}
local QUIET = 60 -- seconds between two log lines about the same trouble, per worker

local process = { config = nil, reg = nil, timer = false }

local function fail(msg)
    error("nginxgen.metrics.init: " .. msg, 0)
end

local function show(v)
    if type(v) == "string" then
        return format("%q", v)
    end
    return tostring(v)
end

local function number_option(cfg, name, lo, hi)
    local v = cfg[name]
    if v == nil then
        return DEFAULTS[name]
    end
    if type(v) ~= "number" or v ~= v or v < lo or v > hi then
        fail(name .. " must be a number from " .. lo .. " to " .. hi .. ", got " .. show(v))
    end
    return v
end

local function check_routes(routes)
    if routes == nil then
        return {}
    end
    if type(routes) ~= "table" then
        fail("routes must be a table of route label → { service = name }")
    end
    local out = {}
    for label, r in pairs(routes) do
        if type(label) ~= "string" or label == "" then
            fail("routes: a route label must be a non-empty string, got " .. show(label))
        end
        if type(r) ~= "table" then
            fail("routes[" .. show(label) .. "] must be a table")
        end
        for k, v in pairs(r) do
            if k == "service" then
                if type(v) ~= "string" then
                    fail("routes[" .. show(label) .. "].service must be a string, got " .. show(v))
                end
            elseif k == "cache" or k == "versions" then
                if type(v) ~= "boolean" then
                    fail("routes[" .. show(label) .. "]." .. k .. " must be true or false, got " .. show(v))
                end
            else
                fail("routes[" .. show(label) .. "]: unknown setting " .. show(k))
            end
        end
        out[label] = { service = r.service or "", cache = r.cache == true, versions = r.versions == true }
    end
    return out
end

local function check_buckets(b)
    if b == nil then
        return registry.DEFAULTS.buckets
    end
    if type(b) ~= "table" or #b == 0 or #b > 30 then
        fail("buckets must be a list of 1 to 30 upper bounds in seconds")
    end
    local prev = 0
    for i = 1, #b do
        if type(b[i]) ~= "number" or b[i] ~= b[i] or b[i] <= prev or b[i] == math.huge then
            fail("buckets must be finite, positive and increasing; got " .. show(b[i]) .. " at " .. i)
        end
        prev = b[i]
    end
    return b
end

-- config: { routes = { [label] = { service = name, cache = bool, versions = bool } },
--           dict?, interval?, cache_ttl?, max_peers?, max_versions?, peer_ttl?, buckets? }
function _M.init(config)
    if config == nil then
        config = {}
    end
    if type(config) ~= "table" then
        fail("give a table of settings")
    end
    for k in pairs(config) do
        if DEFAULTS[k] == nil and k ~= "routes" and k ~= "buckets" then
            fail("unknown setting " .. show(k))
        end
    end
    local dict = config.dict or DEFAULTS.dict
    if type(dict) ~= "string" or ngx.shared[dict] == nil then
        fail("the config has no `lua_shared_dict " .. tostring(dict) .. "`")
    end
    process.config = {
        dict = dict,
        routes = check_routes(config.routes),
        buckets = check_buckets(config.buckets),
        interval = number_option(config, "interval", 0.05, 60),
        cache_ttl = number_option(config, "cache_ttl", 0, 60),
        max_peers = number_option(config, "max_peers", 1, 100000),
        max_versions = number_option(config, "max_versions", 1, 100),
        peer_ttl = number_option(config, "peer_ttl", 60, 30 * 86400),
    }
end

local function settings()
    local cfg = process.config
    if cfg == nil then
        cfg = {
            dict = DEFAULTS.dict, routes = {}, buckets = registry.DEFAULTS.buckets,
            interval = DEFAULTS.interval, cache_ttl = DEFAULTS.cache_ttl,
            max_peers = DEFAULTS.max_peers, max_versions = DEFAULTS.max_versions,
            peer_ttl = DEFAULTS.peer_ttl,
        }
        process.config = cfg
    end
    return cfg
end

-- The cache module says what it did with a request (read from its ngx.ctx state).
local function cache_result(ctx)
    local cache = package.loaded["nginxgen.cache"]
    if type(cache) == "table" and cache.result then
        return cache.result(ctx)
    end
    return nil
end

local function get_ctx()
    return ngx.ctx
end

local function complain(state, what, ...)
    local now = ngx_now()
    if (state[what] or 0) <= now then
        state[what] = now + QUIET
        ngx.log(ngx.WARN, "nginxgen metrics: ", ...)
    end
end

-- The generation of endpoints this worker serves, when the endpoint feed runs here.
local function served_generation()
    local endpoints = package.loaded["nginxgen.endpoints"]
    if type(endpoints) == "table" and endpoints.generation then
        return endpoints.generation()
    end
    return nil
end

local function tick(premature, reg, dict, state)
    local ok, kept = pcall(reg.flush, reg, dict, ngx_now())
    if not ok then
        complain(state, "bug", "flush failed: ", kept)
    elseif kept > 0 then
        complain(state, "refused", "the shared dict refused some counts (", reg.last_error,
            "); kept for the next flush: give lua_shared_dict ", state.dict_name, " more memory")
    end
    if reg.evicting then
        reg.evicting = false
        complain(state, "evicting", "lua_shared_dict ", state.dict_name,
            " is full and evicts series: give it more memory")
    end
    if premature or ngx.worker.exiting() then
        return -- the last flush of a worker that exits; its gauges leave with it
    end
    local gen = served_generation()
    if gen then
        dict:set(state.gen_key, gen, state.gauge_ttl)
    end
end

local function start()
    local cfg = settings()
    local dict = ngx.shared[cfg.dict]
    if dict == nil then
        process.reg = false -- no dict: count nothing (logged once)
        ngx.log(ngx.ERR, "nginxgen metrics: no lua_shared_dict ", cfg.dict, ": counting nothing")
        return false
    end
    local reg = registry.new(cfg, cache_result)
    process.reg = reg
    local state = {
        dict_name = cfg.dict,
        gen_key = 'g|worker="' .. (ngx.worker.id() or 0) .. '"|',
        gauge_ttl = cfg.interval * 5 + 1,
    }
    local ok, err = ngx.timer.every(cfg.interval, tick, reg, dict, state)
    if not ok then
        ngx.log(ngx.ERR, "nginxgen metrics: cannot start the flush timer: ", err)
    end
    return reg
end

function _M.init_worker()
    if process.reg == nil then
        start()
    end
end

function _M.log(key)
    local reg = process.reg
    if not reg then
        if reg == false then
            return
        end
        reg = start() -- no init_worker hook in this config: start on the first request
        if not reg then
            return
        end
    end
    -- "/api/|0.003|10.0.0.1:8080" (RECORD) or "/api/|0.003" (BALANCED_RECORD): route
    -- labels hold no space or bar (the spec refuses them; a hand-written label with a bar
    -- miscounts only its own requests, under bounded labels); upstream addresses may hold
    -- both, so they come last.
    local line = ngx_var.nginxgen_metrics
    local bar = line and find(line, "|", 1, true)
    if bar == nil then
        -- a config without the map: three more reads
        return reg:observe(ngx_var.nginxgen_route, ngx.status, ngx_now() - start_time(),
            ngx_var.upstream_addr, ngx_var.upstream_response_time, ngx_var, get_ctx, key)
    end
    local from = 1
    if byte(line, 4) == 32 then
        -- a config rendered before: "200 0.004 /api/|…" (status and time are read below)
        from = (find(line, " ", 5, true) or 4) + 1
    end
    local addr, rt
    local bar2 = find(line, "|", bar + 1, true)
    if bar2 == nil then
        if bar < #line then
            rt = sub(line, bar + 1) -- the peer is the balancer's `key`
        end
    elseif bar2 < #line then
        addr = sub(line, bar2 + 1)
        rt = sub(line, bar + 1, bar2 - 1)
    end
    -- whole milliseconds, as $request_time has them (ngx.now() is the same cached clock)
    local ms = floor((ngx_now() - start_time()) * 1000 + 0.5)
    return reg:observe(sub(line, from, bar - 1), ngx.status, (ms > 0 and ms or 0) / 1000,
        addr, rt, ngx_var, get_ctx, key)
end

local STATES = { "active", "reading", "writing", "waiting" }

-- Families computed when scraped: connections (stub_status' numbers) and the dict's room.
local function scrape_time(dict)
    local conns = {}
    for _, s in ipairs(STATES) do
        local v = ngx_var["connections_" .. s]
        if v then
            conns[#conns + 1] = 'nginxgen_connections{state="' .. s .. '"} ' .. v
        end
    end
    local extra = {}
    if #conns > 0 then
        extra[#extra + 1] = { "nginxgen_connections", "gauge",
            "Client connections of this nginx by state (as stub_status counts them).", conns }
    end
    local ok, free = pcall(dict.free_space, dict)
    if ok and free then
        extra[#extra + 1] = { "nginxgen_metrics_dict_free_bytes", "gauge",
            "Free memory (whole pages) in the metrics shared dict; near 0 it starts evicting.",
            { "nginxgen_metrics_dict_free_bytes " .. exposition.number(free) } }
    end
    return extra
end

local function yield()
    ngx.sleep(0)
end

-- The text of /metrics: the cached one, else rendered here (one worker at a time).
local function text(dict, cfg)
    local cached = dict:get(TEXT_KEY)
    if cached then
        return cached
    end
    if not dict:add(LOCK_KEY, true, 10) then
        -- another worker renders: wait for its text (bounded), else render here too
        for _ = 1, 100 do
            ngx.sleep(0.01)
            cached = dict:get(TEXT_KEY)
            if cached then
                return cached
            end
        end
    end
    local ok, out = pcall(exposition.render, dict, scrape_time(dict), yield)
    dict:delete(LOCK_KEY)
    if not ok then
        error(out)
    end
    if cfg.cache_ttl > 0 then
        -- safe_set: the text never evicts counters; without room it is not kept
        dict:safe_set(TEXT_KEY, out, cfg.cache_ttl)
    end
    return out
end

function _M.serve()
    local cfg = settings()
    local dict = ngx.shared[cfg.dict]
    if dict == nil then
        ngx.status = 500
        ngx.header["Content-Type"] = "text/plain"
        ngx.say("nginxgen metrics: no lua_shared_dict ", cfg.dict)
        return ngx.exit(500)
    end
    ngx.header["Content-Type"] = exposition.CONTENT_TYPE
    ngx.header["Cache-Control"] = "no-store"
    ngx.print(text(dict, cfg))
end

_M.escape = escape

return _M
