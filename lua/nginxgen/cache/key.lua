-- nginxgen.cache.key: which requests may use the cache, and the Redis key they use.
--
-- Pure functions (tests/lua/cache_key_test.lua); the request phases in nginxgen.cache feed
-- them what nginx parsed. A key covers exactly what the gateway sends upstream on a cached
-- route: method, scheme, the Host sent, the raw path, the query arguments, the identity the
-- gateway forwards and the route's key headers. Everything else the backend might read is
-- either set by the gateway or removed (see nginxgen/cache.py).

local ngx = ngx
local ngx_md5 = ngx.md5
local escape_uri = ngx.escape_uri

local concat = table.concat
local sort = table.sort
local find = string.find
local sub = string.sub
local lower = string.lower
local gsub = string.gsub
local match = string.match
local gmatch = string.gmatch
local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber

local _M = {}

-- Cache-Control directives → { name = value or true }; names lowercased. A repeated
-- header (a table) counts as one list, as HTTP says.
function _M.directives(value)
    local out = {}
    if value == nil then
        return out
    end
    if type(value) == "table" then
        value = concat(value, ",")
    end
    for part in gmatch(value, "[^,]+") do
        local name, arg = match(part, "^%s*([^=%s]+)%s*=%s*(.-)%s*$")
        if name then
            out[lower(name)] = (gsub(arg, '^"(.*)"$', "%1"))
        else
            name = match(part, "^%s*(.-)%s*$")
            if name ~= "" then
                out[lower(name)] = true
            end
        end
    end
    return out
end

-- Why this request must not use the cache (nil: it may). `h` holds the request headers
-- authorization, cookie, cache_control, pragma, content_length and transfer_encoding
-- (strings or nil).
function _M.bypass_reason(route, method, h)
    if method ~= "GET" and method ~= "HEAD" then
        return "method"
    end
    -- A body is an input the key does not cover (and some applications read it on GET).
    if h.transfer_encoding or (h.content_length and tonumber(h.content_length) ~= 0) then
        return "body"
    end
    if route.bypass_credentials and (h.authorization or h.cookie) then
        return "credentials"
    end
    if route.allow_no_cache and (h.cache_control or h.pragma) then
        local cc = _M.directives(h.cache_control)
        if cc["no-cache"] or cc["no-store"] or _M.directives(h.pragma)["no-cache"] then
            return "no-cache"
        end
    end
    return nil
end

-- Query arguments in a canonical order: sorted by name, repeated names keep their order
-- (a=1&a=2 and a=2&a=1 may mean different things to the application).
function _M.canonical_args(args)
    local names = {}
    for name in pairs(args) do
        names[#names + 1] = name
    end
    sort(names)
    local parts = {}
    for _, name in ipairs(names) do
        local value = args[name]
        local values = type(value) == "table" and value or { value }
        for _, v in ipairs(values) do
            if v == true then
                parts[#parts + 1] = escape_uri(name)
            else
                parts[#parts + 1] = escape_uri(name) .. "=" .. escape_uri(tostring(v))
            end
        end
    end
    return concat(parts, "&")
end

-- One keyed input: absent ("-") differs from empty ("="), and each value of a repeated
-- header counts (a backend may read any of them). Values never hold a newline: nginx
-- refuses such headers, so "\n" separates them unambiguously.
function _M.part(value)
    if value == nil then
        return "-"
    end
    if type(value) == "table" then
        return "=" .. concat(value, "\n")
    end
    return "=" .. tostring(value)
end

-- The Redis key: prefix .. md5(method, scheme, host, raw path, sorted args, extra...).
-- The raw path (not the normalized $uri) is what the upstream sees, so two requests that
-- differ there never share an entry; hashing keeps query values, identities and header
-- values (tokens, e-mail addresses) out of Redis. `extra`: `part()`s of the identity and
-- key headers, in the route's order (nil or empty: none, as in keys of earlier releases).
function _M.cache_key(prefix, method, scheme, host, request_uri, args, extra)
    local path = request_uri
    local q = find(path, "?", 1, true)
    if q then
        path = sub(path, 1, q - 1)
    end
    local material = { method, scheme, lower(host or ""), path, _M.canonical_args(args) }
    if extra then
        for _, p in ipairs(extra) do
            material[#material + 1] = p
        end
    end
    return prefix .. ngx_md5(concat(material, "\n"))
end

return _M
