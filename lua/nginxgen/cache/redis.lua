-- nginxgen.cache.redis: GET and SET against Redis through the keepalive pool, behind a
-- breaker that skips Redis for a cool-down after errors in a row (the cache fails open).
--
-- Two client libraries: OpenResty's resty.redis (set_timeouts) and Debian's nginx.redis
-- (an older lua-resty-redis with a single set_timeout). `new` takes the library, so tests
-- (tests/lua/cache_redis_test.lua) drive both shapes with fakes and a fake shared dict.
-- The object holds settings and the state dict only, never a socket: each call opens (or
-- takes from the pool) its own connection.

local ngx = ngx
local ngx_log = ngx.log
local WARN = ngx.WARN

local format = string.format
local tostring = tostring
local getenv = os.getenv
local pcall = pcall
local ipairs = ipairs
local require = require
local setmetatable = setmetatable

local _M = {}

-- Keys in the state dict.
local DOWN = "redis:down"  -- present while Redis is skipped (the cool-down)
local SUSPECT = "redis:suspect"  -- set when tripped: the next failure trips again at once
local PROBE = "redis:probe"  -- one request at a time tests Redis after a cool-down
local ERRORS = "redis:errors"  -- errors in a row

-- The installed client: (library, "resty.redis" | "nginx.redis"), or nil.
function _M.find_library(load)
    load = load or require
    for _, name in ipairs({ "resty.redis", "nginx.redis" }) do
        local ok, lib = pcall(load, name)
        if ok and lib then
            return lib, name
        end
    end
    return nil
end

local Client = {}
Client.__index = Client

-- cfg: host, port, socket, db, password_env, connect_timeout, read_timeout (ms),
-- pool, pool_size, idle_timeout (ms), errors_to_skip, cooldown (s).
function _M.new(cfg, state, lib, flavor)
    return setmetatable({ cfg = cfg, state = state, lib = lib, flavor = flavor }, Client)
end

-- May this request talk to Redis? No during a cool-down; right after one, only a single
-- probe at a time, so an outage costs one timeout per cool-down, not one per request.
function Client:usable()
    local state, r = self.state, self.cfg
    if state:get(DOWN) then
        return false
    end
    if state:get(SUSPECT) then
        local probe_ttl = (r.connect_timeout + 2 * r.read_timeout) / 1000 + 1
        return (state:add(PROBE, true, probe_ttl))
    end
    return true
end

function Client:failed(what, err)
    local state, r = self.state, self.cfg
    local errors = state:incr(ERRORS, 1, 0)
    if (errors or 0) >= r.errors_to_skip or state:get(SUSPECT) then
        state:set(DOWN, true, r.cooldown)
        state:set(SUSPECT, true)
        state:delete(ERRORS)
        state:delete(PROBE)
        ngx_log(WARN, "nginxgen.cache: redis ", what, " failed (", tostring(err),
                "); serving from the upstream without the cache for ", r.cooldown, "s")
    end
end

function Client:worked()
    local state = self.state
    if state:get(ERRORS) then
        state:delete(ERRORS)
    end
    if state:get(SUSPECT) then
        state:delete(SUSPECT)
        state:delete(PROBE)
        ngx_log(WARN, "nginxgen.cache: redis is back; caching resumes")
    end
end

function Client:connect()
    local r = self.cfg
    local red, err = self.lib:new()
    if not red then
        return nil, err
    end
    local resty = self.flavor == "resty.redis"
    if resty then
        red:set_timeouts(r.connect_timeout, r.read_timeout, r.read_timeout)
    else
        red:set_timeout(r.connect_timeout)  -- nginx.redis: one timeout; raised after connect
    end
    local ok
    local opts = { pool = r.pool }
    if r.socket then
        ok, err = red:connect("unix:" .. r.socket, opts)
    else
        ok, err = red:connect(r.host, r.port, opts)
    end
    if not ok then
        return nil, err
    end
    if not resty then
        red:set_timeout(r.read_timeout)
    end
    if red:get_reused_times() == 0 then
        -- A fresh connection: authenticate and pick the db once; pooled ones already are.
        local password = r.password_env and getenv(r.password_env)
        if password and password ~= "" then
            local res, aerr = red:auth(password)
            if not res then
                red:close()
                return nil, "auth: " .. tostring(aerr)
            end
        end
        if r.db and r.db ~= 0 then
            local res, serr = red:select(r.db)
            if not res then
                red:close()
                return nil, "select: " .. tostring(serr)
            end
        end
    end
    return red
end

-- A connection goes back to the pool only after a complete exchange. After an error the
-- reply may still be in flight, and a pooled socket would hand it to the next request.
local function done(red, r)
    local ok = red:set_keepalive(r.idle_timeout, r.pool_size)
    if not ok then
        red:close()
    end
end

local function exchange(self, command, ...)
    local red, err = self:connect()
    if not red then
        return nil, err
    end
    local res
    res, err = red[command](red, ...)
    if err or not res then
        red:close()
        return nil, err or "no reply"
    end
    done(red, self.cfg)
    return res
end

-- The stored value; nil on a miss; false when Redis is skipped or failed (BYPASS).
function Client:get(key)
    if not self:usable() then
        return false
    end
    local value, err = exchange(self, "get", key)
    if err then
        self:failed("read", err)
        return false
    end
    self:worked()
    if value == ngx.null then
        return nil
    end
    return value
end

-- Store `value` for `ttl_ms` (an integer, sent as digits: a Lua number would go out as
-- "1e+14" past 14 digits, which Redis refuses). True when stored.
function Client:set(key, value, ttl_ms)
    if not self:usable() then
        return false
    end
    local ok, err = exchange(self, "set", key, value, "PX", format("%d", ttl_ms))
    if not ok then
        self:failed("write", err)
        return false
    end
    self:worked()
    return true
end

return _M
