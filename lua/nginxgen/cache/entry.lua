-- nginxgen.cache.entry: whether an upstream answer may be stored, for how long, and the
-- bytes it is stored as.
--
-- Pure functions (tests/lua/cache_entry_test.lua). A hit replays the stored answer's
-- status, headers and body: every header a fresh answer carried except the hop-by-hop
-- ones and those the gateway makes anew for each answer.

local ngx = ngx
local parse_http_time = ngx.parse_http_time
local directives = require("nginxgen.cache.key").directives

local concat = table.concat
local sort = table.sort
local find = string.find
local sub = string.sub
local lower = string.lower
local gsub = string.gsub
local match = string.match
local floor = math.floor
local min = math.min
local type = type
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local tostring = tostring

local _M = {}

local FORMAT = "NGXC2"  -- first token of every stored entry; bump when the layout changes
_M.FORMAT = FORMAT

-- Response headers never stored: hop-by-hop (RFC 9110 7.6.1) and those each answer gets
-- anew — Set-Cookie (such answers are not stored at all), the length and the age of
-- this answer, the cache verdict, the date, the server and the request id.
local NOT_STORED = {}
for _, name in ipairs({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
    "set-cookie", "content-length", "age", "x-cache", "date", "server", "x-request-id",
}) do
    NOT_STORED[name] = true
end

-- Seconds the upstream lets a shared cache keep this answer, or nil when it does not say.
-- s-maxage beats max-age for a shared cache; both beat Expires. A value that does not
-- parse means "already stale", as RFC 9111 says.
function _M.freshness(cache_control, expires, now)
    local cc = directives(cache_control)
    local limit = cc["s-maxage"] or cc["max-age"]
    if limit ~= nil then
        return (limit ~= true and match(limit, "^%d+$")) and tonumber(limit) or 0
    end
    if expires ~= nil then
        if type(expires) == "table" then
            return 0  -- two Expires headers: ambiguous, so stale
        end
        local at = parse_http_time(expires)
        if not at then
            return 0
        end
        return at > now and at - now or 0
    end
    return nil
end

-- How many ms this response may be stored (a number), or false and why not. `h` holds
-- the response headers set_cookie, cache_control, expires, content_length,
-- content_encoding, vary; `now` is in seconds.
function _M.storable(route, status, h, now)
    if not route.status_set[status] then
        return false, "status"
    end
    if h.set_cookie then
        return false, "set-cookie"
    end
    local cc = directives(h.cache_control)
    if cc["private"] or cc["no-store"] or cc["no-cache"] then
        return false, "cache-control"
    end
    local fresh = _M.freshness(h.cache_control, h.expires, now)
    if fresh ~= nil and fresh <= 0 then
        return false, "stale"  -- max-age=0, s-maxage=0, an Expires in the past
    end
    local length = tonumber(h.content_length)
    if length and length > route.max_body then
        return false, "too-large"
    end
    if h.content_encoding and lower(h.content_encoding) ~= "identity" then
        return false, "content-encoding"  -- would reach clients that did not ask for it
    end
    local vary = h.vary
    if vary then
        if type(vary) == "table" then
            vary = concat(vary, ",")
        end
        vary = gsub(lower(vary), "accept%-encoding", "")  -- the gateway asks for identity
        if find(vary, "[^%s,]") then
            return false, "vary"
        end
    end
    local ttl = route.ttl
    if fresh ~= nil then
        ttl = min(ttl, floor(fresh * 1000))
    end
    return ttl
end

-- The response headers to store, as { name, value } pairs sorted by name (a repeated
-- header keeps its order). `headers` is what ngx.resp.get_headers(n, true) returns.
function _M.stored_headers(headers)
    local names = {}
    for name in pairs(headers) do
        if not NOT_STORED[lower(name)] then
            names[#names + 1] = name
        end
    end
    sort(names, function(a, b) return lower(a) < lower(b) end)
    local out = {}
    for _, name in ipairs(names) do
        local v = headers[name]
        if type(v) == "table" then
            for _, one in ipairs(v) do
                out[#out + 1] = { name, one }
            end
        else
            out[#out + 1] = { name, v }
        end
    end
    return out
end

local function clean(value)
    return (gsub(tostring(value), "[\r\n]", " "))
end

-- Entry layout: "NGXC2 <status> <stored-at ms> <expires-at ms>\n", then "Name: value\n"
-- lines, "\n", the body. Times are ngx.now() in ms: hits send Age, L1 copies expire with
-- the entry.
function _M.encode(status, headers, body, stored_at, expires_at)
    local out = { FORMAT, " ", status, " ", floor(stored_at * 1000), " ",
                  floor(expires_at * 1000), "\n" }
    for _, pair in ipairs(headers) do
        out[#out + 1] = clean(pair[1]) .. ": " .. clean(pair[2]) .. "\n"
    end
    out[#out + 1] = "\n"
    out[#out + 1] = body
    return concat(out)
end

-- The stored answer, or nil for a value in another format (an older release's entries
-- are misses, not errors) or a damaged one.
function _M.decode(value)
    local head_end = find(value, "\n\n", 1, true)
    if not head_end then
        return nil
    end
    local first = find(value, "\n", 1, true)
    local fmt, status, stored, expires = match(sub(value, 1, first - 1),
                                               "^(%S+) (%d+) (%d+) (%d+)$")
    if fmt ~= FORMAT then
        return nil
    end
    local headers = {}
    local pos = first + 1
    while pos <= head_end do
        local eol = find(value, "\n", pos, true)
        local line = sub(value, pos, eol - 1)
        local colon = find(line, ": ", 1, true)
        if colon then
            headers[#headers + 1] = { sub(line, 1, colon - 1), sub(line, colon + 2) }
        end
        pos = eol + 1
    end
    return {
        status = tonumber(status),
        stored_at = tonumber(stored) / 1000,
        expires_at = tonumber(expires) / 1000,
        headers = headers,
        body = sub(value, head_end + 2),
    }
end

return _M
