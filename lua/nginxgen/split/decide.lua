-- The split decision for one request, and the check of the document it reads.
-- Pure: the request's values come through get(kind, name), randomness through rand().
--
-- doc = { versions = { { name, upstream, bps, live }... },   -- in the sidecar's order
--         sticky = "cookie_session" | "",                     -- nginx variable, no `$`
--         rules = { { kind = "header"|"cookie"|"query", name, op = "equals"|"matches",
--                     value, to }... },
--         mirror = { to, percent }? }
-- Buckets: 10,000; version i owns [edge(i-1), edge(i)) where edge is the running sum of
-- bps in the document's order, so moving green 10 -> 20 % moves only the keys whose
-- buckets lie between the old and the new edge.

local _M = {}

local ngx = ngx
local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local match = string.match
local crc32 = ngx.crc32_short
local re_find = ngx.re.find

_M.BUCKETS = 10000

local VERSION = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
local UPSTREAM = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
local VARIABLE = "^[A-Za-z_][A-Za-z0-9_]*$"
local NAME = "^[A-Za-z0-9!#$%%&'*+.^_`|~-]+$"
local KINDS = { header = true, cookie = true, query = true }
local OPS = { equals = true, matches = true }

function _M.bucket(key)
    return crc32(key) % _M.BUCKETS
end

local function show(v)
    local s = tostring(v)
    if #s > 40 then
        s = s:sub(1, 40) .. "..."
    end
    return (s:gsub("[%c\"\\]", "?"))
end

local function known_keys(t, allowed, where)
    for k in pairs(t) do
        if not allowed[k] then
            return where .. ": unknown field " .. show(k)
        end
    end
    return nil
end

local function integer(v, lo, hi)
    return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

local DOC_KEYS = { versions = true, sticky = true, rules = true, mirror = true }
local VERSION_KEYS = { name = true, upstream = true, bps = true, live = true }
local RULE_KEYS = { kind = true, name = true, op = true, value = true, to = true }
local MIRROR_KEYS = { to = true, percent = true }

-- nil when the document can be served, else one sentence that says why not.
-- `upstreams` (optional): the upstream names this service may use (the config's).
function _M.check(doc, upstreams)
    if type(doc) ~= "table" then
        return "must be an object"
    end
    local bad = known_keys(doc, DOC_KEYS, "split")
    if bad then
        return bad
    end
    if type(doc.versions) ~= "table" or #doc.versions == 0 then
        return "versions must be a non-empty list"
    end
    local names, total = {}, 0
    for i, v in ipairs(doc.versions) do
        local where = "versions[" .. (i - 1) .. "]"
        if type(v) ~= "table" then
            return where .. " must be an object"
        end
        bad = known_keys(v, VERSION_KEYS, where)
        if bad then
            return bad
        end
        if type(v.name) ~= "string" or #v.name > 32 or not match(v.name, VERSION) then
            return where .. ".name: not a version name: " .. show(v.name)
        end
        if names[v.name] then
            return where .. ".name: " .. show(v.name) .. " appears twice"
        end
        names[v.name] = true
        if type(v.upstream) ~= "string" or #v.upstream > 128 or not match(v.upstream, UPSTREAM) then
            return where .. ".upstream: not an upstream name: " .. show(v.upstream)
        end
        if upstreams and not upstreams[v.upstream] then
            return where .. ".upstream: " .. show(v.upstream) .. " is not in the config (a new version needs a reload)"
        end
        if not integer(v.bps, 0, _M.BUCKETS) then
            return where .. ".bps: must be an integer 0-10000, got " .. show(v.bps)
        end
        if type(v.live) ~= "boolean" then
            return where .. ".live: must be true or false"
        end
        if v.bps > 0 and not v.live then
            return where .. ": a version with no live instance cannot take a share"
        end
        total = total + v.bps
    end
    if total ~= 0 and total ~= _M.BUCKETS then
        return "versions: bps must add up to 10000 (or 0: nobody alive), got " .. total
    end
    if type(doc.sticky) ~= "string" or (doc.sticky ~= "" and not match(doc.sticky, VARIABLE)) then
        return "sticky: must be an nginx variable name without $, or \"\", got " .. show(doc.sticky)
    end
    if doc.rules ~= nil then
        if type(doc.rules) ~= "table" then
            return "rules must be a list"
        end
        for i, r in ipairs(doc.rules) do
            local where = "rules[" .. (i - 1) .. "]"
            if type(r) ~= "table" then
                return where .. " must be an object"
            end
            bad = known_keys(r, RULE_KEYS, where)
            if bad then
                return bad
            end
            if not KINDS[r.kind] then
                return where .. ".kind: must be header, cookie or query, got " .. show(r.kind)
            end
            if type(r.name) ~= "string" or #r.name > 64 or not match(r.name, NAME) then
                return where .. ".name: not a valid name: " .. show(r.name)
            end
            if not OPS[r.op] then
                return where .. ".op: must be equals or matches, got " .. show(r.op)
            end
            if type(r.value) ~= "string" or #r.value > 256 then
                return where .. ".value: must be a string of at most 256 bytes"
            end
            if r.op == "matches" then
                local ok, _, _, err = pcall(re_find, "", r.value, "jo")
                if not ok or err then
                    return where .. ".value: not a valid regex: " .. show(err or r.value)
                end
            end
            if not names[r.to] then
                return where .. ".to: " .. show(r.to) .. " is not one of the versions"
            end
        end
    end
    if doc.mirror ~= nil then
        local m = doc.mirror
        if type(m) ~= "table" then
            return "mirror must be an object"
        end
        bad = known_keys(m, MIRROR_KEYS, "mirror")
        if bad then
            return bad
        end
        if not names[m.to] then
            return "mirror.to: " .. show(m.to) .. " is not one of the versions"
        end
        if type(m.percent) ~= "number" or m.percent <= 0 or m.percent > 100 then
            return "mirror.percent: must be a number above 0 and at most 100, got " .. show(m.percent)
        end
    end
    return nil
end

-- A checked document made ready for requests: the variable names of the rules, the
-- bucket edges, the versions by name.
function _M.compile(doc)
    local c = { versions = {}, by_name = {}, edges = {}, rules = {}, sticky = doc.sticky ~= "" and doc.sticky or nil }
    local edge = 0
    for i, v in ipairs(doc.versions) do
        edge = edge + v.bps
        c.versions[i] = v
        c.edges[i] = edge
        c.by_name[v.name] = v
    end
    c.total = edge
    for i, r in ipairs(doc.rules or {}) do
        local var
        if r.kind == "header" then
            var = "http_" .. r.name:lower():gsub("-", "_")
        elseif r.kind == "cookie" then
            var = "cookie_" .. r.name
        else
            var = "arg_" .. r.name
        end
        c.rules[i] = { var = var, op = r.op, value = r.value, to = c.by_name[r.to] }
    end
    if doc.mirror then
        c.mirror = { to = c.by_name[doc.mirror.to], percent = doc.mirror.percent }
    end
    return c
end

-- The version for a bucket 0..9999: the first whose edge lies above it.
function _M.by_bucket(c, b)
    local edges = c.edges
    for i = 1, #edges do
        if b < edges[i] then
            return c.versions[i]
        end
    end
    return nil
end

-- get(var) -> the request's value of nginx variable `var` (nil when unset);
-- rand() -> an integer 0..9999. Returns the version table, and why ("rule", "sticky",
-- "random"); nil when no version is live.
function _M.decide(c, get, rand)
    for _, r in ipairs(c.rules) do
        local v = get(r.var)
        if v ~= nil and r.to.live then
            if r.op == "equals" then
                if v == r.value then
                    return r.to, "rule"
                end
            elseif re_find(v, r.value, "jo") then
                return r.to, "rule"
            end
        end
    end
    if c.total == 0 then
        return nil, "none"
    end
    if c.sticky then
        local key = get(c.sticky)
        if key ~= nil and key ~= "" then
            return _M.by_bucket(c, _M.bucket(key)), "sticky"
        end
    end
    return _M.by_bucket(c, rand()), "random"
end

return _M
