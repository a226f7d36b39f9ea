-- The Prometheus text exposition format (version 0.0.4) of what the shared dict holds.
--
-- The dict's keys are `FAMILY|LABELS|SUFFIX` (nginxgen.metrics.registry writes them):
-- FAMILY one of the short keys below, LABELS the series' labels already escaped and
-- joined (`route="/api/",service="carts"`), SUFFIX the value of the family's last label
-- (a status class, a cache result, a histogram bucket's upper bound, or `sum`). Keys that
-- start with `#` are the module's own (the cached text, the render lock) and are skipped.
-- Label values may hold `|`: the family ends at the first bar, the suffix after the last.

local _M = {}

local type = type
local tostring = tostring
local tonumber = tonumber
local pairs = pairs
local find = string.find
local gsub = string.gsub
local match = string.match
local byte = string.byte
local format = string.format
local floor = math.floor
local huge = math.huge
local sort = table.sort
local concat = table.concat

_M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- Families in the order they are printed. `label`: the name of the suffix's label
-- (nil: the suffix is empty); histograms take `le` from it.
_M.FAMILIES = {
    { key = "r", name = "nginxgen_requests_total", type = "counter", label = "status",
      help = "Requests answered by the gateway, by route, service, version and status class." },
    { key = "d", name = "nginxgen_request_duration_seconds", type = "histogram",
      help = "Time from reading the request to logging it, by route." },
    { key = "u", name = "nginxgen_upstream_response_seconds", type = "histogram",
      help = "Time spent waiting for upstream peers (all attempts of a request), by route." },
    { key = "p", name = "nginxgen_upstream_requests_total", type = "counter", label = "status",
      help = "Attempts sent to each upstream peer, by the status class of its answer." },
    { key = "c", name = "nginxgen_cache_total", type = "counter", label = "result",
      help = "Requests on cached routes by what the gateway's Redis cache did (hit, miss, bypass)." },
    { key = "l", name = "nginxgen_rate_limited_total", type = "counter",
      help = "Requests the gateway refused with 429 (limit_req or limit_conn), by route." },
    { key = "a", name = "nginxgen_auth_refused_total", type = "counter", label = "status",
      help = "Requests the gateway refused with 401 (no or bad credentials) or 403, by route." },
    { key = "g", name = "nginxgen_endpoints_generation", type = "gauge",
      help = "The endpoint generation each nginx worker serves (dynamic upstreams)." },
}

local BY_KEY = {}
for _, f in ipairs(_M.FAMILIES) do
    BY_KEY[f.key] = f
end

local ESCAPES = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }

-- A label value as the text format wants it: backslash, double quote and line feed
-- escaped; everything else (UTF-8 included) as is.
function _M.escape(value)
    if type(value) ~= "string" then
        value = tostring(value)
    end
    if not find(value, '[\\"\n]') then
        return value
    end
    return (gsub(value, '[\\"\n]', ESCAPES))
end

-- Counters are whole numbers (exact below 2^53); sums are not: the shortest of 15 or
-- 17 digits that reads back as the same double.
function _M.number(v)
    if v == floor(v) and v > -9007199254740992 and v < 9007199254740992 then
        return format("%d", v)
    end
    local text = format("%.15g", v)
    if tonumber(text) ~= v then
        text = format("%.17g", v)
    end
    return text
end
local number = _M.number

-- "0.005" → 0.005, "+Inf" → infinity (tonumber does not read it).
local function bound(le)
    if le == "+Inf" then
        return huge
    end
    return tonumber(le) or huge
end

local function series(name, labels, extra)
    if labels == "" then
        if extra == nil then
            return name
        end
        return name .. "{" .. extra .. "}"
    end
    if extra == nil then
        return name .. "{" .. labels .. "}"
    end
    return name .. "{" .. labels .. "," .. extra .. "}"
end

local function sorted_keys(t)
    local out = {}
    for k in pairs(t) do
        out[#out + 1] = k
    end
    sort(out)
    return out
end

local function counter_lines(out, fam, sets)
    local name, label = fam.name, fam.label
    for _, labels in ipairs(sorted_keys(sets)) do
        local values = sets[labels]
        for _, suffix in ipairs(sorted_keys(values)) do
            local extra = label and (label .. '="' .. suffix .. '"') or nil
            out[#out + 1] = series(name, labels, extra) .. " " .. number(values[suffix])
        end
    end
end

local function by_bound(a, b)
    return a[1] < b[1]
end

-- Buckets are stored per slot (not cumulative); the text wants them cumulative, in
-- increasing order of `le`, ending with +Inf, which equals _count.
local function histogram_lines(out, fam, sets)
    local bucket, sum_name, count_name = fam.name .. "_bucket", fam.name .. "_sum", fam.name .. "_count"
    for _, labels in ipairs(sorted_keys(sets)) do
        local values = sets[labels]
        local slots = {}
        for suffix, v in pairs(values) do
            if suffix ~= "sum" then
                slots[#slots + 1] = { bound(suffix), suffix, v }
            end
        end
        sort(slots, by_bound)
        local total = 0
        for _, s in ipairs(slots) do
            total = total + s[3]
            if s[1] ~= huge then
                out[#out + 1] = series(bucket, labels, 'le="' .. s[2] .. '"') .. " " .. number(total)
            end
        end
        out[#out + 1] = series(bucket, labels, 'le="+Inf"') .. " " .. number(total)
        out[#out + 1] = series(sum_name, labels) .. " " .. number(values.sum or 0)
        out[#out + 1] = series(count_name, labels) .. " " .. number(total)
    end
end

-- The exposition text of every series in `dict`, then `extra` (families the caller
-- computes at scrape time: { { name, type, help, { "series value", ... } }, ... }).
-- `yield` (optional) is called every 1,000 keys so a big dict does not hold the worker.
function _M.render(dict, extra, yield)
    local keys = dict:get_keys(0)
    local sets = {} -- family key → labels → suffix → value
    for i = 1, #keys do
        local key = keys[i]
        if byte(key, 1) ~= 35 then -- "#"
            local fam, labels, suffix = match(key, "^([^|]*)|(.*)|([^|]*)$")
            local value = fam and BY_KEY[fam] and dict:get(key)
            if type(value) == "number" then
                local f = sets[fam]
                if f == nil then
                    f = {}
                    sets[fam] = f
                end
                local s = f[labels]
                if s == nil then
                    s = {}
                    f[labels] = s
                end
                s[suffix] = value
            end
        end
        if yield and i % 1000 == 0 then
            yield()
        end
    end

    local out = {}
    for _, fam in ipairs(_M.FAMILIES) do
        out[#out + 1] = "# HELP " .. fam.name .. " " .. fam.help
        out[#out + 1] = "# TYPE " .. fam.name .. " " .. fam.type
        local f = sets[fam.key]
        if f then
            if fam.type == "histogram" then
                histogram_lines(out, fam, f)
            else
                counter_lines(out, fam, f)
            end
        end
    end
    for _, e in ipairs(extra or {}) do
        out[#out + 1] = "# HELP " .. e[1] .. " " .. e[3]
        out[#out + 1] = "# TYPE " .. e[1] .. " " .. e[2]
        for _, line in ipairs(e[4]) do
            out[#out + 1] = line
        end
    end
    out[#out + 1] = ""
    return concat(out, "\n")
end

return _M
