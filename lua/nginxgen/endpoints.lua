-- The live endpoint feed inside nginx: peers change without a reload.
--
--   init(config)    init_by_lua (master): the rendered plan, the token digest, the boot
--                   snapshot and its journal; seeds the shared dict (docs/endpoints-feed.md)
--   init_worker()   init_worker_by_lua: load, then check for new generations every
--                   poll_interval (10 ms) and report the generation served
--   push()          content handler of POST /nginxgen/endpoints (loopback, token)
--   status()        content handler of GET /nginxgen/endpoints/status (same token)
--   upstream(name)  what balance() serves: a table lookup, no JSON on the request path
--   generation()    the generation this worker serves (for nginxgen.metrics)
--
-- This module holds the process's one Feed (set by init, inherited by the workers).

local schema = require("nginxgen.endpoints.schema")
local json = require("nginxgen.endpoints.json")
local feed_mod = require("nginxgen.endpoints.feed")
local journal_mod = require("nginxgen.endpoints.journal")
local apikey = require("nginxgen.apikey")
local ffi = require("ffi")
local bit = require("bit")

local _M = {}

local ngx = ngx
local type = type
local tonumber = tonumber
local tostring = tostring
local byte = string.byte
local match = string.match
local format = string.format
local bxor = bit.bxor
local bor = bit.bor
local io_open = io.open
local concat = table.concat
local randomseed = math.randomseed
local pcall = pcall
local error = error
local pairs = pairs

local DEFAULTS = {
    dict = "nginxgen_endpoints",
    health_dict = "nginxgen_health",
    max_peers = 1000,
    max_body = 32 * 1024 * 1024,
    poll_interval = 0.01, -- a dict get per tick when nothing changed: nothing per request
}
local LEVELS = { error = ngx.ERR, warn = ngx.WARN, notice = ngx.NOTICE }

local process = {} -- { feed, config }: set once by init, read-only afterwards

local function log(level, ...)
    ngx.log(LEVELS[level] or ngx.ERR, ...)
end

-- init_by_lua cannot yield: wait for another process's commit with a plain sleep.
local blocking_sleep
do
    pcall(ffi.cdef, "int usleep(unsigned int usec);")
    blocking_sleep = function(seconds)
        ffi.C.usleep(seconds * 1e6)
    end
end

local function option(cfg, key, kind, lo, hi)
    local v = cfg[key]
    if v == nil then
        return DEFAULTS[key]
    end
    if type(v) ~= kind or (kind == "number" and (v < lo or v > hi)) then
        error("nginxgen.endpoints.init: " .. key .. " must be a " .. kind
            .. (lo and (" from " .. lo .. " to " .. hi) or "") .. ", got " .. schema.show(v), 0)
    end
    return v
end

local function shared(name)
    local dict = ngx.shared[name]
    if dict == nil then
        error("nginxgen.endpoints.init: the config has no `lua_shared_dict " .. name .. "`", 0)
    end
    return dict
end

local ENOENT = 2

-- The file's content; nil when it cannot be read, logged unless it does not exist (an
-- unreadable journal must not pass for a missing one).
local function read_file(path)
    local f, err, code = io_open(path, "rb")
    if f == nil then
        if code ~= ENOENT then
            log("error", "nginxgen endpoints: cannot read ", err)
        end
        return nil
    end
    local text, rerr = f:read("*a")
    f:close()
    if text == nil then
        log("error", "nginxgen endpoints: cannot read ", path, ": ", rerr)
    end
    return text
end

-- Re-reads of the snapshot and its journal when they look read mid-write (journal.lua).
local PAIR_TRIES = 5

-- config: { plan = JSON text, token_sha256 = hex, snapshot = path?, dict?, health_dict?,
--           max_peers?, max_body?, poll_interval? } — see docs/endpoints-feed.md.
function _M.init(config)
    ngx.update_time()
    local started = ngx.now()
    if type(config) ~= "table" then
        error("nginxgen.endpoints.init: give a table of settings", 0)
    end
    for key in pairs(config) do
        if DEFAULTS[key] == nil and key ~= "plan" and key ~= "token_sha256" and key ~= "snapshot" then
            error("nginxgen.endpoints.init: unknown setting " .. schema.show(key), 0)
        end
    end
    local digest = config.token_sha256
    if type(digest) ~= "string" or not match(digest, "^%x+$") or #digest ~= 64 then
        error("nginxgen.endpoints.init: token_sha256 must be the sha256 hex digest of the token", 0)
    end
    local cfg = {
        token_sha256 = digest:lower(),
        snapshot = option(config, "snapshot", "string"),
        dict = option(config, "dict", "string"),
        health_dict = option(config, "health_dict", "string"),
        max_peers = option(config, "max_peers", "number", 1, 100000),
        max_body = option(config, "max_body", "number", 1024, 1024 * 1024 * 1024),
        poll_interval = option(config, "poll_interval", "number", 0.001, 1),
    }
    -- The plan's JSON comes in pieces: nginx refuses a string of 4 KB or more inside a
    -- *_by_lua_block, so the renderer cuts it (docs/endpoints-feed.md).
    local text = config.plan
    if type(text) == "table" then
        for i = 1, #text do
            if type(text[i]) ~= "string" then
                text = nil
                break
            end
        end
        text = text and concat(text)
    end
    if type(text) ~= "string" then
        error("nginxgen.endpoints.init: plan must be the JSON text of the upstreams and their "
            .. "initial endpoints, as a list of strings", 0)
    end
    local doc, jerr = json.decode(text)
    if doc == nil then
        error("nginxgen.endpoints.init: plan is not valid JSON: " .. tostring(jerr), 0)
    end
    local plan, err = schema.plan(doc, cfg)
    if not plan then
        error("nginxgen.endpoints.init: plan: " .. err.error, 0)
    end
    local feed = feed_mod.new({
        plan = plan,
        dict = shared(cfg.dict),
        health_dict = shared(cfg.health_dict),
        max_peers = cfg.max_peers,
        sleep = blocking_sleep,
        log = log,
    })
    local snapshot, journal -- the boot snapshot and its delta records
    if cfg.snapshot then
        local reads, why
        snapshot, journal, reads, why = journal_mod.read_pair(read_file, cfg.snapshot,
            PAIR_TRIES, blocking_sleep)
        if why then
            log("warn", "nginxgen endpoints: the boot snapshot's journal after ", reads,
                " reads: ", why)
        elseif reads > 1 then
            log("notice", "nginxgen endpoints: read the boot snapshot and its journal ",
                reads, " times (the sidecar was writing them)")
        end
    end
    local summary = feed:seed(snapshot, cfg.snapshot, journal)
    ngx.update_time()
    log("notice", "nginxgen endpoints: serving ", summary, " after ",
        format("%.2f", ngx.now() - started), " s")
    process.feed, process.config = feed, cfg
end

local function yield()
    ngx.sleep(0)
end

local function tick(premature, feed, state)
    if premature then
        return
    end
    local ok, err = pcall(feed.sync, feed, yield)
    if not ok then
        log("error", "nginxgen endpoints: cannot apply a new generation: ", err)
        return
    end
    -- Report at once what changed (here or in a push this worker took), else once a second.
    local now = ngx.now()
    if feed.seq ~= state.seq or now - state.reported >= 1 then
        feed:heartbeat(state.id, state.pid)
        state.reported, state.seq = now, feed.seq
    end
end

function _M.init_worker()
    local feed = process.feed
    if feed == nil then
        error("nginxgen.endpoints.init_worker: call nginxgen.endpoints.init in init_by_lua first")
    end
    randomseed(ngx.now() * 1000 + ngx.worker.pid())
    feed:resync()
    local state = {
        id = ngx.worker.id() or 0, pid = ngx.worker.pid(), reported = ngx.now(), seq = feed.seq,
    }
    feed:heartbeat(state.id, state.pid)
    local ok, err = ngx.timer.every(process.config.poll_interval, tick, feed, state)
    if not ok then
        log("error", "nginxgen endpoints: cannot start the feed timer: ", err)
    end
end

-- The shared dict that holds passive health (the balancer's, for its own log throttle).
function _M.health_dict_name()
    local cfg = process.config
    return cfg and cfg.health_dict or DEFAULTS.health_dict
end

function _M.upstream(name)
    local feed = process.feed
    return feed and feed.upstreams[name]
end

-- The generation this worker serves (nginxgen.metrics reports it), nil without init.
function _M.generation()
    local feed = process.feed
    return feed and feed.generation
end

local function same(a, b)
    if #a ~= #b then
        return false
    end
    local diff = 0
    for i = 1, #a do
        diff = bor(diff, bxor(byte(a, i), byte(b, i)))
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

-- The token travels as "Authorization: Bearer <token>"; only its digest is configured.
local function authorized()
    local h = ngx.req.get_headers()["authorization"]
    if type(h) ~= "string" then
        return false
    end
    local token = match(h, "^[Bb]earer +(%S+)$")
    return token ~= nil and same(apikey.digest(token), process.config.token_sha256)
end

-- Defence in depth: the feed lives on the loopback status listener, behind allow/deny.
local function loopback(addr)
    return addr ~= nil and (match(addr, "^127%.") ~= nil or addr == "::1" or match(addr, "^unix:") ~= nil)
end

local function guard(method)
    if process.feed == nil then
        return answer(503, { error = "the endpoint feed is not initialised" })
    end
    if not loopback(ngx.var.remote_addr) then
        return answer(403, { error = "the endpoint feed answers loopback clients only" })
    end
    if ngx.req.get_method() ~= method then
        ngx.header["Allow"] = method
        return answer(405, { error = "use " .. method })
    end
    if not authorized() then
        return answer(401, { error = "missing or wrong token (Authorization: Bearer ...)" })
    end
    return true
end

local function body_text(limit)
    local length = tonumber(ngx.var.http_content_length or "")
    if length and length > limit then
        return nil, 413
    end
    ngx.req.read_body()
    local data = ngx.req.get_body_data()
    if data == nil then
        local file = ngx.req.get_body_file()
        data = file and read_file(file)
    end
    if data == nil or data == "" then
        return nil, 400
    end
    if #data > limit then
        return nil, 413
    end
    return data
end

function _M.push()
    if guard("POST") ~= true then
        return
    end
    local limit = process.config.max_body
    local body, code = body_text(limit)
    if body == nil then
        if code == 413 then
            return answer(413, { error = "the body is larger than " .. limit .. " bytes" })
        end
        return answer(400, { error = "the body is empty; send the endpoints as JSON" })
    end
    local done, status, result = pcall(process.feed.push, process.feed, body, yield)
    if not done then
        -- a bug, not bad input: nothing was committed unless the commit itself finished
        log("error", "nginxgen endpoints: push failed: ", status)
        return answer(500, { error = "the push failed inside nginx; see its error log" })
    end
    if status ~= 200 then
        log("warn", "nginxgen endpoints: push refused (", status, "): ", result.error)
    end
    return answer(status, result)
end

function _M.status()
    if guard("GET") ~= true then
        return
    end
    local feed = process.feed
    local name = ngx.var.arg_service
    if name then
        local svc = feed:service(ngx.unescape_uri(name))
        if svc == nil then
            return answer(404, { error = "unknown service " .. schema.show(name) })
        end
        return answer(200, svc)
    end
    return answer(200, feed:status(ngx.worker.count()))
end

return _M
