-- Blue-green and canary releases: which version of a service a request goes to.
--
--   init(config)      init_by_lua (master): the version upstreams the config declares per
--                     service, the token's digest, the sidecar's state file (documents)
--   route(service)    set_by_lua $nginxgen_split_upstream: the chosen version's upstream,
--                     "" when no version is live (the location's `if` returns 500, which
--                     its error_page makes the 503: nginxgen.balancer.unavailable); the
--                     version is left in ngx.ctx.nginxgen_version for /metrics
--   available(service) rewrite_by_lua of a cached split route: 503 when route() found no
--                     version to serve (before the cache's access phase)
--   mirror(service)   set_by_lua in the internal mirror location: the upstream a copy
--                     goes to, or "" (no copy) for the requests outside its percent
--   push()            content handler of POST /nginxgen/split (loopback, token): new
--                     documents for some services, in force at each worker's next request
--   status()          content handler of GET /nginxgen/split/status: documents in force
--
-- Workers keep the compiled documents and look at one counter in the shared dict per
-- request; a push bumps it. The decision makes no system call and cannot yield.

local decide = require("nginxgen.split.decide")
local json = require("nginxgen.endpoints.json")
local apikey = require("nginxgen.apikey")
local balancer = require("nginxgen.balancer") -- its 503 body; it does not require split
local bit = require("bit")

local _M = {}

local ngx = ngx
local type = type
local pairs = pairs
local random = math.random
local ipairs = ipairs
local tostring = tostring
local match = string.match
local byte = string.byte

local process = { dict = "nginxgen_split" } -- set once by init, read-only afterwards
-- This worker's compiled documents and the dict counter they were read at.
local worker = { seen = -1, compiled = {} }

local function fail(msg)
    error("nginxgen.split.init: " .. msg, 0)
end

local function read_file(path)
    local f = io.open(path, "rb")
    if f == nil then
        return nil
    end
    local data = f:read("*a")
    f:close()
    return data
end

-- Until the sidecar's state file (or a push) says otherwise: every version an equal share.
local function fallback(names)
    local versions, n = {}, #names
    for i, up in ipairs(names) do
        local share = math.floor(decide.BUCKETS / n) + ((i <= decide.BUCKETS % n) and 1 or 0)
        versions[i] = { name = up:match("%-%-(.+)$") or up, upstream = up, bps = share, live = true }
    end
    return { versions = versions, sticky = "", rules = {} }
end

-- config: { upstreams = { [service] = { "carts--blue", ... } }, token_sha256 = hex,
--           state = path?, dict? }. `state` is the sidecar's JSON file
-- { "services": { [service] = document } }, read by the master at start and reload.
function _M.init(config)
    if type(config) ~= "table" then
        fail("config must be a table")
    end
    for k in pairs(config) do
        if k ~= "upstreams" and k ~= "token_sha256" and k ~= "dict" and k ~= "state" then
            fail("unknown setting " .. tostring(k))
        end
    end
    local digest = config.token_sha256
    if type(digest) ~= "string" or not match(digest, "^%x+$") or #digest ~= 64 then
        fail("token_sha256 must be the sha256 hex digest of the token")
    end
    if type(config.upstreams) ~= "table" then
        fail("upstreams must be a table of service -> list of upstream names")
    end
    local name = config.dict or process.dict
    local dict = ngx.shared[name]
    if dict == nil then
        fail("no lua_shared_dict " .. name)
    end
    local upstreams = {}
    for service, names in pairs(config.upstreams) do
        if type(service) ~= "string" or type(names) ~= "table" or #names == 0 then
            fail("upstreams." .. tostring(service) .. " must be a non-empty list")
        end
        local allowed = {}
        for _, up in ipairs(names) do
            allowed[up] = true
        end
        upstreams[service] = allowed
    end
    local docs = {}
    local text = config.state and read_file(config.state)
    local state = text and json.decode(text)
    if text and (type(state) ~= "table" or type(state.services) ~= "table") then
        ngx.log(ngx.ERR, "nginxgen split: ", config.state, " is not a split state file; ",
            "every version takes an equal share until the sidecar pushes")
        state = nil
    end
    for service, allowed in pairs(upstreams) do
        local doc = state and state.services[service]
        local why = doc and decide.check(doc, allowed)
        if why then
            ngx.log(ngx.ERR, "nginxgen split: ", config.state, ": service ", service, ": ", why,
                "; every version takes an equal share until the sidecar pushes")
        end
        if doc == nil or why then
            doc = fallback(config.upstreams[service])
        end
        docs[service] = doc
    end
    -- A start or reload reads the sidecar's latest decision: it replaces what a push left.
    dict:flush_all()
    for service, doc in pairs(docs) do
        local ok, err = dict:set("d|" .. service, json.encode(doc))
        if not ok then
            fail("lua_shared_dict " .. name .. ": " .. tostring(err))
        end
    end
    dict:set("seq", 0)
    process.dict = name
    process.token_sha256 = digest:lower()
    process.upstreams = upstreams
end

local function compiled(service)
    local dict = ngx.shared[process.dict]
    if dict == nil then
        return nil
    end
    local seq = dict:get("seq") or 0
    if seq ~= worker.seen then
        worker.compiled = {}
        worker.seen = seq
    end
    local c = worker.compiled[service]
    if c == nil then
        local text = dict:get("d|" .. service)
        local doc = text and json.decode(text)
        if doc == nil or decide.check(doc) ~= nil then
            c = false
        else
            c = decide.compile(doc)
        end
        worker.compiled[service] = c
    end
    return c or nil
end

local function var(name)
    return ngx.var[name]
end

local function rand()
    return random(0, decide.BUCKETS - 1)
end

-- Workers fork from one master: without a seed of their own they draw the same numbers.
local function seed()
    if not worker.seeded then
        worker.seeded = true
        math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
    end
end

function _M.route(service)
    seed()
    local c = compiled(service)
    if c == nil then
        return ""
    end
    local v = decide.decide(c, var, rand)
    if v == nil then
        return ""
    end
    ngx.ctx.nginxgen_version = v.name
    return v.upstream
end

-- rewrite_by_lua of a cached split route (after route() in the rewrite module's pass): 503
-- on purpose when no version had anyone to serve, as a rendered `return 503` does.
function _M.available(service)
    local ctx = ngx.ctx
    if ctx.nginxgen_version ~= nil then
        ctx.nginxgen_checked = true -- the balancer's nobody refusal: 502 here (balancer.lua)
        return
    end
    return balancer.answer_503(service)
end

function _M.mirror(service)
    seed()
    local c = compiled(service)
    local m = c and c.mirror
    if m == nil or not m.to.live or random() * 100 >= m.percent then
        return ""
    end
    return m.to.upstream
end

local function same(a, b)
    if #a ~= #b then
        return false
    end
    local diff = 0
    for i = 1, #a do
        diff = bit.bor(diff, bit.bxor(byte(a, i), byte(b, i)))
    end
    return diff == 0
end

local function answer(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(json.encode(body))
    return ngx.exit(status)
end

local function guard(method)
    if process.token_sha256 == nil then
        return answer(503, { error = "the split is not initialised" })
    end
    local addr = ngx.var.remote_addr
    if not (match(addr or "", "^127%.") or addr == "::1") then
        return answer(403, { error = "the split answers loopback clients only" })
    end
    if ngx.req.get_method() ~= method then
        ngx.header["Allow"] = method
        return answer(405, { error = "use " .. method })
    end
    local h = ngx.req.get_headers()["authorization"]
    local token = type(h) == "string" and match(h, "^[Bb]earer +(%S+)$")
    if not token or not same(apikey.digest(token), process.token_sha256) then
        return answer(401, { error = "missing or wrong token (Authorization: Bearer ...)" })
    end
    return true
end

-- Body: { "services": { "carts": document, ... } }. All or nothing.
function _M.push()
    if guard("POST") ~= true then
        return
    end
    ngx.req.read_body()
    local body = json.decode(ngx.req.get_body_data() or "")
    if type(body) ~= "table" or type(body.services) ~= "table" then
        return answer(400, { error = "send {\"services\": {name: document}} as JSON" })
    end
    for k in pairs(body) do
        if k ~= "services" then
            return answer(400, { error = "unknown field " .. tostring(k) })
        end
    end
    local texts, count = {}, 0
    for service, doc in pairs(body.services) do
        local allowed = process.upstreams[service]
        if allowed == nil then
            return answer(400, { error = "service " .. tostring(service):sub(1, 40)
                .. " has no split in this config (a new split needs a reload)", service = service })
        end
        local why = decide.check(doc, allowed)
        if why then
            return answer(400, { error = "service " .. service .. ": " .. why, service = service })
        end
        texts[service] = json.encode(doc)
        count = count + 1
    end
    local dict = ngx.shared[process.dict]
    for service, text in pairs(texts) do
        local ok, err = dict:set("d|" .. service, text)
        if not ok then
            return answer(507, { error = "lua_shared_dict " .. process.dict .. ": " .. tostring(err) })
        end
    end
    local seq = dict:incr("seq", 1, 0)
    return answer(200, { services = count, seq = seq })
end

function _M.status()
    if guard("GET") ~= true then
        return
    end
    local dict = ngx.shared[process.dict]
    local out = {}
    for service in pairs(process.upstreams) do
        local text = dict:get("d|" .. service)
        out[service] = text and json.decode(text) or json.null
    end
    return answer(200, { seq = dict:get("seq") or 0, services = out })
end

return _M
