-- Prometheus counters for nginxgen gateways, kept in a lua_shared_dict.
--
-- `log()` runs in the log phase of every request on the public server (log_by_lua at
-- server level, so named error locations count too); `serve()` answers /metrics on the
-- loopback status server. The route comes from $nginxgen_route, which survives the
-- internal redirects of error_page (ngx.ctx would not).

local _M = {}

local ngx = ngx
local tonumber = tonumber
local floor = math.floor
local sort = table.sort
local concat = table.concat
local gmatch = string.gmatch
local format = string.format

local DICT = "nginxgen_metrics"
local SEP = "\t"
-- Upper bounds (seconds) of the upstream response time histogram.
local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local CACHE_RESULTS = { hit = true, miss = true, bypass = true, expired = true, stale = true }

local function incr(dict, key, by)
    local _, err = dict:incr(key, by or 1, 0)
    if err then
        ngx.log(ngx.WARN, "nginxgen metrics: cannot count ", key, ": ", err)
    end
end

-- "0.002, 0.010 : 0.001" (retries, internal redirects) → total seconds, or nil.
local function upstream_seconds(value)
    if value == nil or value == "" then
        return nil
    end
    local total, seen = 0, false
    for n in gmatch(value, "[%d.]+") do
        local v = tonumber(n)
        if v then
            total = total + v
            seen = true
        end
    end
    if seen then
        return total
    end
    return nil
end

function _M.log()
    local dict = ngx.shared[DICT]
    if dict == nil then
        return
    end
    local var = ngx.var
    local route = var.nginxgen_route
    if route == nil or route == "" then
        route = "-"
    end
    local status = ngx.status or 0
    incr(dict, "req" .. SEP .. route .. SEP .. floor(status / 100) .. "xx")

    local seconds = upstream_seconds(var.upstream_response_time)
    if seconds then
        local slot = #BUCKETS + 1
        for i = 1, #BUCKETS do
            if seconds <= BUCKETS[i] then
                slot = i
                break
            end
        end
        incr(dict, "lat" .. SEP .. route .. SEP .. slot)
        incr(dict, "latsum" .. SEP .. route, seconds)
    end

    if var.limit_req_status == "REJECTED" or var.limit_conn_status == "REJECTED" then
        incr(dict, "limited" .. SEP .. route)
    end

    local cache = var.sent_http_x_cache
    if cache and cache ~= "" then
        cache = cache:lower()
        if CACHE_RESULTS[cache] then
            incr(dict, "cache" .. SEP .. route .. SEP .. cache)
        end
    end
end

local function label(value)
    return (value:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n"))
end

local function split(key)
    local parts = {}
    for part in gmatch(key, "[^" .. SEP .. "]+") do
        parts[#parts + 1] = part
    end
    return parts
end

local HELP = {
    { "nginxgen_requests_total", "counter", "Requests by route and status class." },
    { "nginxgen_rate_limited_total", "counter", "Requests refused by limit_req or limit_conn." },
    { "nginxgen_cache_total", "counter", "Responses by route and X-Cache result." },
    { "nginxgen_upstream_response_seconds", "histogram", "Upstream response time by route." },
}

-- The exposition text for everything counted so far.
function _M.render()
    local dict = ngx.shared[DICT]
    local keys = dict and dict:get_keys(0) or {}
    sort(keys)
    local lines = { requests = {}, limited = {}, cache = {}, histogram = {} }
    local hist = {} -- route → { slots = {}, sum = n }
    local routes = {}
    for _, key in ipairs(keys) do
        local value = dict:get(key)
        local p = split(key)
        if value then
            if p[1] == "req" then
                local t = lines.requests
                t[#t + 1] = format('nginxgen_requests_total{route="%s",status="%s"} %d',
                    label(p[2]), p[3], value)
            elseif p[1] == "limited" then
                local t = lines.limited
                t[#t + 1] = format('nginxgen_rate_limited_total{route="%s"} %d', label(p[2]), value)
            elseif p[1] == "cache" then
                local t = lines.cache
                t[#t + 1] = format('nginxgen_cache_total{route="%s",result="%s"} %d',
                    label(p[2]), p[3], value)
            elseif p[1] == "lat" or p[1] == "latsum" then
                local h = hist[p[2]]
                if h == nil then
                    h = { slots = {}, sum = 0 }
                    hist[p[2]] = h
                    routes[#routes + 1] = p[2]
                end
                if p[1] == "lat" then
                    h.slots[tonumber(p[3])] = value
                else
                    h.sum = value
                end
            end
        end
    end
    sort(routes)
    local t = lines.histogram
    for _, route in ipairs(routes) do
        local h, seen = hist[route], 0
        local name = label(route)
        for i = 1, #BUCKETS + 1 do
            seen = seen + (h.slots[i] or 0)
            local le = BUCKETS[i] and format("%g", BUCKETS[i]) or "+Inf"
            t[#t + 1] = format('nginxgen_upstream_response_seconds_bucket{route="%s",le="%s"} %d',
                name, le, seen)
        end
        t[#t + 1] = format('nginxgen_upstream_response_seconds_sum{route="%s"} %.6f', name, h.sum)
        t[#t + 1] = format('nginxgen_upstream_response_seconds_count{route="%s"} %d', name, seen)
    end

    local out = {}
    local groups = { lines.requests, lines.limited, lines.cache, lines.histogram }
    for i, meta in ipairs(HELP) do
        out[#out + 1] = "# HELP " .. meta[1] .. " " .. meta[3]
        out[#out + 1] = "# TYPE " .. meta[1] .. " " .. meta[2]
        for _, line in ipairs(groups[i]) do
            out[#out + 1] = line
        end
    end
    out[#out + 1] = ""
    return concat(out, "\n")
end

function _M.serve()
    ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    ngx.print(_M.render())
end

return _M
