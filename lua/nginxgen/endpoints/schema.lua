-- The endpoint feed's documents, validated as a whole before anything is stored.
--
-- Three documents share one shape (docs/endpoints-feed.md):
--   push      {"generation": N, "services": {NAME: SERVICE}, "removed": [NAME]}
--   snapshot  the same, as the sidecar persisted it (unknown services are skipped, since
--             the config may have dropped them after the snapshot was written)
--   plan      {"generation": N, "upstreams": {NAME: {"balance": ..}}, "services": {..}}
--             rendered into nginx.conf: the known upstreams and their initial endpoints
-- SERVICE is {"peers": [PEER], "tries": N?}; PEER is {"host", "port", "weight"?, "state"?,
-- "backup"?, "max_fails"?, "fail_timeout"?}. A refusal names the service, the peer index
-- (0-based, as in the JSON array) and the field.

local ip = require("nginxgen.ip")

local _M = {}

local type = type
local pairs = pairs
local next = next
local match = string.match
local tostring = tostring
local floor = math.floor
local huge = math.huge
local format = string.format
local gsub = string.gsub
local sub = string.sub
local byte = string.byte

-- Balancing methods the upstream declaration may name (the spec's `balance` values;
-- the hash key itself is computed by nginx and passed to balance()).
_M.BALANCE = {
    round_robin = true,
    least_conn = true,
    ip_hash = true,
    random = true,
    hash = true,
    consistent_hash = true,
}
_M.STATES = { up = true, draining = true, down = true }
_M.MAX_WEIGHT = 1000
_M.MAX_TRIES = 100
_M.MAX_FAILS = 1000
_M.MAX_FAIL_TIMEOUT = 86400
-- Generations stay exact through JSON (cjson prints 14 significant digits): a millisecond
-- clock fits until the year 5138.
_M.MAX_GENERATION = 1e14 - 1
-- nginx's own server defaults, for peers and upstreams that give none.
_M.DEFAULT_MAX_FAILS = 1
_M.DEFAULT_FAIL_TIMEOUT = 10

local PUSH_KEYS = { generation = true, services = true, removed = true }
local PLAN_KEYS = { generation = true, upstreams = true, services = true }
local SERVICE_KEYS = { peers = true, tries = true }
local UPSTREAM_KEYS = { balance = true, max_fails = true, fail_timeout = true }
local PEER_KEYS = {
    host = true, port = true, weight = true, state = true, backup = true,
    max_fails = true, fail_timeout = true,
}

-- A short, printable rendering of a refused value: never raw control bytes in a reply.
local function show(v)
    local t = type(v)
    if t == "string" then
        local s = #v > 40 and sub(v, 1, 40) .. "..." or v
        s = gsub(s, '[%c"\\\127-\255]', function(c)
            return format("\\x%02x", byte(c))
        end)
        return '"' .. s .. '"'
    end
    if t == "number" then
        return tostring(v)
    end
    if t == "boolean" then
        return tostring(v)
    end
    if t == "table" then
        return "a JSON " .. ((next(v) == nil or v[1] ~= nil) and "array" or "object")
    end
    return "null"
end
_M.show = show

local function refuse(msg, where)
    local err = { error = msg }
    if where then
        err.service, err.peer, err.field = where.service, where.peer, where.field
        local path = where.path
        if path then
            err.error = path .. ": " .. msg
        end
    end
    return nil, err
end

local function is_int(v, lo, hi)
    return type(v) == "number" and v == v and v ~= huge and v ~= -huge and floor(v) == v
        and v >= lo and v <= hi
end

local function is_array(t)
    if type(t) ~= "table" then
        return false
    end
    local n = #t
    local count = 0
    for _ in pairs(t) do
        count = count + 1
    end
    return count == n
end

local function is_object(t)
    if type(t) ~= "table" then
        return false
    end
    if next(t) == nil then
        return true -- {} and [] decode alike
    end
    for k in pairs(t) do
        if type(k) ~= "string" then
            return false
        end
    end
    return true
end

local function unknown_key(t, allowed)
    for k in pairs(t) do
        if not allowed[k] then
            return k
        end
    end
    return nil
end

local function service_path(name)
    return "services." .. (show(name))
end

local function check_generation(doc)
    local g = doc.generation
    if not is_int(g, 1, _M.MAX_GENERATION) then
        return refuse("must be an integer from 1 to " .. format("%.0f", _M.MAX_GENERATION)
            .. ", got " .. show(g), { field = "generation", path = "generation" })
    end
    return g
end

-- max_fails and fail_timeout: on a peer, or an upstream's defaults for its peers.
-- (max_fails, fail_timeout) or (nil, field, why): the caller says where.
local function health_fields(t, defaults)
    local mf = t.max_fails
    if mf == nil then
        mf = defaults.max_fails
    elseif not is_int(mf, 0, _M.MAX_FAILS) then
        return nil, "max_fails", "must be an integer 0-" .. _M.MAX_FAILS
            .. " (0 turns passive checks off), got " .. show(mf)
    end
    local ft = t.fail_timeout
    if ft == nil then
        ft = defaults.fail_timeout
    elseif type(ft) ~= "number" or ft ~= ft or ft < 0 or ft > _M.MAX_FAIL_TIMEOUT then
        return nil, "fail_timeout", "must be a number of seconds 0-" .. _M.MAX_FAIL_TIMEOUT
            .. ", got " .. show(ft)
    end
    return mf, ft
end

-- One peer → its normalised table, or (nil, field, why). Paths are only built for a
-- refusal: a 10,000-service plan has 100,000 peers to get through.
local function check_peer(p, defaults)
    if not is_object(p) or next(p) == nil then
        return nil, nil, "must be an object with host and port, got " .. show(p)
    end
    local extra = unknown_key(p, PEER_KEYS)
    if extra then
        return nil, extra, "unknown field (known: host, port, weight, state, backup, max_fails, "
            .. "fail_timeout)"
    end
    local host, why = ip.parse(p.host)
    if not host then
        return nil, "host", why .. ", got " .. show(p.host)
    end
    if not is_int(p.port, 1, 65535) then
        return nil, "port", "must be an integer 1-65535, got " .. show(p.port)
    end
    local weight = p.weight
    if weight == nil then
        weight = 1
    elseif not is_int(weight, 0, _M.MAX_WEIGHT) then
        return nil, "weight", "must be an integer 0-" .. _M.MAX_WEIGHT .. " (0 = draining), got "
            .. show(weight)
    end
    local state = p.state
    if state == nil then
        state = weight == 0 and "draining" or "up"
    elseif type(state) ~= "string" or not _M.STATES[state] then
        return nil, "state", 'must be "up", "draining" or "down", got ' .. show(state)
    elseif state == "up" and weight == 0 then
        return nil, "weight", 'weight 0 means draining: give state "draining" or a weight of 1-'
            .. _M.MAX_WEIGHT
    end
    local backup = p.backup
    if backup == nil then
        backup = false
    elseif type(backup) ~= "boolean" then
        return nil, "backup", "must be true or false, got " .. show(backup)
    end
    local mf, ft, hwhy = health_fields(p, defaults)
    if mf == nil then
        return nil, ft, hwhy
    end
    return {
        host = host,
        port = p.port,
        weight = weight,
        state = state,
        backup = backup,
        max_fails = mf,
        fail_timeout = ft,
    }
end

local function peer_refusal(name, i, field, why)
    local path = service_path(name) .. ".peers[" .. (i - 1) .. "]"
    if field then
        path = path .. "." .. (PEER_KEYS[field] and field or show(field))
    end
    return refuse(why, { service = name, peer = i - 1, field = field, path = path })
end

local function check_service(entry, name, defaults, limits)
    local path = service_path(name)
    if not is_object(entry) then
        return refuse("must be an object with a peers list, got " .. show(entry),
            { service = name, path = path })
    end
    local extra = unknown_key(entry, SERVICE_KEYS)
    if extra then
        return refuse("unknown field (known: peers, tries)",
            { service = name, field = extra, path = path .. "." .. show(extra) })
    end
    local peers = entry.peers
    if not is_array(peers) then
        return refuse("must be a list of peers, got " .. show(peers),
            { service = name, field = "peers", path = path .. ".peers" })
    end
    if #peers > limits.max_peers then
        return refuse("has " .. #peers .. " peers, more than the limit of " .. limits.max_peers,
            { service = name, field = "peers", path = path .. ".peers" })
    end
    local tries = entry.tries
    if tries ~= nil and not is_int(tries, 1, _M.MAX_TRIES) then
        return refuse("must be an integer 1-" .. _M.MAX_TRIES .. ", got " .. show(tries),
            { service = name, field = "tries", path = path .. ".tries" })
    end
    local out, seen = {}, {}
    for i = 1, #peers do
        local peer, field, why = check_peer(peers[i], defaults)
        if not peer then
            return peer_refusal(name, i, field, why)
        end
        local key = peer.host .. "|" .. peer.port
        if seen[key] then
            return refuse("lists " .. peer.host .. " port " .. peer.port .. " twice (also peers["
                .. (seen[key] - 1) .. "])",
                { service = name, peer = i - 1, field = "host", path = path .. ".peers[" .. (i - 1) .. "]" })
        end
        seen[key] = i
        out[i] = peer
    end
    return { tries = tries, peers = out }
end

local NO_DEFAULTS = { max_fails = _M.DEFAULT_MAX_FAILS, fail_timeout = _M.DEFAULT_FAIL_TIMEOUT }

-- services (+ removed) of a push or snapshot → name → entry. `known` maps upstream
-- names to their declarations; `skip_unknown` (snapshots) skips names it lacks.
local function check_services(doc, known, limits, skip_unknown)
    local services = doc.services
    if services == nil then
        services = {}
    elseif not is_object(services) then
        return refuse("must be an object of service name → endpoints, got " .. show(services),
            { field = "services", path = "services" })
    end
    local out, skipped = {}, {}
    for name, entry in pairs(services) do
        local decl = known[name]
        if decl == nil then
            if not skip_unknown then
                return refuse("unknown service: the running config has no upstream of that name "
                    .. "(a new service needs a reload)", { service = name, path = service_path(name) })
            end
            skipped[#skipped + 1] = name
        else
            local svc, err = check_service(entry, name, decl, limits)
            if not svc then
                return nil, err
            end
            out[name] = svc
        end
    end
    local removed = doc.removed
    if removed ~= nil then
        if not is_array(removed) then
            return refuse("must be a list of service names, got " .. show(removed),
                { field = "removed", path = "removed" })
        end
        for i = 1, #removed do
            local name = removed[i]
            local path = "removed[" .. (i - 1) .. "]"
            if type(name) ~= "string" then
                return refuse("must be a service name, got " .. show(name), { field = "removed", path = path })
            end
            if known[name] == nil then
                if not skip_unknown then
                    return refuse("unknown service " .. show(name) .. ": the running config has no "
                        .. "upstream of that name", { service = name, field = "removed", path = path })
                end
            elseif out[name] then
                return refuse("service " .. show(name) .. " is both updated and removed",
                    { service = name, field = "removed", path = path })
            else
                out[name] = { peers = {} }
            end
        end
    end
    return out, skipped
end

local function check_limits(limits)
    return { max_peers = (limits and limits.max_peers) or 1000 }
end

-- A push body (decoded JSON) → { generation, services = {name → entry} } | nil, err.
function _M.push(doc, known, limits)
    if not is_object(doc) or next(doc) == nil then
        return refuse("the body must be a JSON object with generation and services")
    end
    local extra = unknown_key(doc, PUSH_KEYS)
    if extra then
        return refuse("unknown field (known: generation, services, removed)",
            { field = extra, path = show(extra) })
    end
    local g, err = check_generation(doc)
    if not g then
        return nil, err
    end
    local services, e2 = check_services(doc, known, check_limits(limits), false)
    if not services then
        return nil, e2
    end
    return { generation = g, services = services }
end

-- A persisted snapshot: like a push, but services the config no longer has are skipped
-- (listed in `.skipped`) instead of refusing the whole file.
function _M.snapshot(doc, known, limits)
    if not is_object(doc) or next(doc) == nil then
        return refuse("the snapshot must be a JSON object with generation and services")
    end
    local extra = unknown_key(doc, PUSH_KEYS)
    if extra then
        return refuse("unknown field (known: generation, services, removed)",
            { field = extra, path = show(extra) })
    end
    local g, err = check_generation(doc)
    if not g then
        return nil, err
    end
    local services, skipped = check_services(doc, known, check_limits(limits), true)
    if not services then
        return nil, skipped
    end
    return { generation = g, services = services, skipped = skipped }
end

-- The plan rendered into nginx.conf: upstream declarations + initial endpoints.
-- generation 0 is allowed here (a config rendered before any push).
function _M.plan(doc, limits)
    if not is_object(doc) then
        return refuse("the plan must be a JSON object with generation, upstreams, services")
    end
    local extra = unknown_key(doc, PLAN_KEYS)
    if extra then
        return refuse("unknown field (known: generation, upstreams, services)",
            { field = extra, path = show(extra) })
    end
    local g = doc.generation or 0
    if not is_int(g, 0, _M.MAX_GENERATION) then
        return refuse("must be an integer from 0 to " .. format("%.0f", _M.MAX_GENERATION)
            .. ", got " .. show(g), { field = "generation", path = "generation" })
    end
    local ups = doc.upstreams
    if not is_object(ups) then
        return refuse("must be an object of upstream name → settings, got " .. show(ups),
            { field = "upstreams", path = "upstreams" })
    end
    local known = {}
    for name, decl in pairs(ups) do
        local path = "upstreams." .. show(name)
        local where = { service = name, path = path }
        -- nginxgen's upstream names (catalog.py _SAFE_NAME); the store uses | and \n.
        if #name > 128 or not match(name, "^[%w][%w_.%-]*$") then
            return refuse("is not an upstream name nginxgen renders", where)
        end
        if not is_object(decl) then
            return refuse("must be an object, got " .. show(decl), where)
        end
        local bad = unknown_key(decl, UPSTREAM_KEYS)
        if bad then
            where.field, where.path = bad, path .. "." .. show(bad)
            return refuse("unknown field (known: balance, max_fails, fail_timeout)", where)
        end
        local balance = decl.balance or "round_robin"
        if type(balance) ~= "string" or not _M.BALANCE[balance] then
            where.field, where.path = "balance", path .. ".balance"
            return refuse("must be one of round_robin, least_conn, ip_hash, random, hash, "
                .. "consistent_hash, got " .. show(balance), where)
        end
        local mf, ft, why = health_fields(decl, NO_DEFAULTS)
        if mf == nil then
            where.field, where.path = ft, path .. "." .. ft
            return refuse(why, where)
        end
        known[name] = { balance = balance, max_fails = mf, fail_timeout = ft }
    end
    local services, err = check_services(doc, known, check_limits(limits), false)
    if not services then
        return nil, err
    end
    return { generation = g, upstreams = known, services = services }
end

return _M
