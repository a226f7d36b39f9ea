-- nginxgen.cache: answer hot reads from Redis inside nginx, fail open when Redis is not there.
--
-- nginxgen renders the configuration once into init_by_lua_block (`init`), and each cached
-- location calls four one-liners: access(route_id), header_filter(), body_filter(), log().
-- Per-request state lives in ngx.ctx; the module holds only that configuration and the
-- Redis client library, never a socket.
--
-- A request is answered from L1 (optional shared dict), else Redis (X-Cache: HIT). A miss
-- takes a stampede lock and goes to the upstream through the location's normal proxy_pass
-- (X-Cache: MISS); its response is collected in body_filter and, when storable, written to
-- Redis from a timer started in the log phase (cosockets are unavailable in those phases).
-- Anything that makes caching unsafe or Redis unusable sends the request upstream with
-- X-Cache: BYPASS.

local ngx = ngx
local ngx_var = ngx.var
local ngx_header = ngx.header
local ngx_shared = ngx.shared
local ngx_req = ngx.req
local ngx_now = ngx.now
local ngx_sleep = ngx.sleep
local ngx_log = ngx.log
local ngx_md5 = ngx.md5
local escape_uri = ngx.escape_uri
local WARN = ngx.WARN
local ERR = ngx.ERR

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
local getenv = os.getenv
local pcall = pcall
local require = require
local error = error

local _M = { _VERSION = "0.1.0" }

-- OpenResty ships lua-resty-redis as resty.redis; Debian packages it as nginx.redis (an
-- older release with a single set_timeout). Chosen once, at load time in the master.
local redis_lib, redis_flavor
do
    local ok, lib = pcall(require, "resty.redis")
    if ok then
        redis_lib, redis_flavor = lib, "resty.redis"
    else
        ok, lib = pcall(require, "nginx.redis")
        if ok then
            redis_lib, redis_flavor = lib, "nginx.redis"
        end
    end
end
_M.redis_flavor = redis_flavor

local FORMAT = "NGXC1"  -- first token of every stored entry; bump when the layout changes
local MAX_ARGS = 100  -- more query arguments than this: not cached (key would be partial)

-- Keys in the state dict.
local DOWN = "redis:down"  -- present while Redis is skipped (the cool-down)
local SUSPECT = "redis:suspect"  -- set when tripped: the next failure trips again at once
local PROBE = "redis:probe"  -- one request at a time tests Redis after a cool-down
local ERRORS = "redis:errors"  -- errors in a row

local config = { routes = {}, redis = nil, state_dict = nil }

---------------------------------------------------------------------------------------
-- Pure parts (tested in tests/lua/cache_test.lua)
---------------------------------------------------------------------------------------

local function set_of(list)
    local out = {}
    for _, v in ipairs(list or {}) do
        out[v] = true
    end
    return out
end

local function has_token(value, token)
    if value == nil then
        return false
    end
    if type(value) == "table" then
        value = concat(value, ",")
    end
    return find(lower(value), token, 1, true) ~= nil
end

-- Why this request must not use the cache (nil: it may). `h` holds the request headers
-- authorization, cookie, cache_control and pragma (strings or nil).
function _M.bypass_reason(route, method, h)
    if method ~= "GET" and method ~= "HEAD" then
        return "method"
    end
    if route.bypass_credentials and (h.authorization or h.cookie) then
        return "credentials"
    end
    if route.allow_no_cache then
        local cc = h.cache_control
        if has_token(cc, "no-cache") or has_token(cc, "no-store")
            or has_token(h.pragma, "no-cache") then
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

-- The Redis key: prefix .. md5(method, scheme, host, raw path, sorted args). The raw path
-- (not the normalized $uri) is what the upstream sees, so two requests that differ there
-- never share an entry; hashing keeps query values (tokens, e-mail addresses) out of Redis.
function _M.cache_key(prefix, method, scheme, host, request_uri, args)
    local path = request_uri
    local q = find(path, "?", 1, true)
    if q then
        path = sub(path, 1, q - 1)
    end
    local material = concat({ method, scheme, lower(host or ""), path,
                              _M.canonical_args(args) }, "\n")
    return prefix .. ngx_md5(material)
end

-- Whether a response may be stored (true) or why not (false, reason). `h` holds the
-- response headers set_cookie, cache_control, content_length, content_encoding, vary.
function _M.storable(route, status, h)
    if not route.status_set[status] then
        return false, "status"
    end
    if h.set_cookie then
        return false, "set-cookie"
    end
    local cc = h.cache_control
    if has_token(cc, "private") or has_token(cc, "no-store") or has_token(cc, "no-cache") then
        return false, "cache-control"
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
    return true
end

local function clean(value)
    return (gsub(tostring(value), "[\r\n]", " "))
end

-- Entry layout: "NGXC1 <status> <stored-at>\n" then "Name: value\n" lines, "\n", body.
function _M.encode(status, headers, body, stored_at)
    local out = { FORMAT, " ", status, " ", floor(stored_at), "\n" }
    for _, pair in ipairs(headers) do
        out[#out + 1] = clean(pair[1]) .. ": " .. clean(pair[2]) .. "\n"
    end
    out[#out + 1] = "\n"
    out[#out + 1] = body
    return concat(out)
end

function _M.decode(value)
    local head_end = find(value, "\n\n", 1, true)
    if not head_end then
        return nil
    end
    local first = find(value, "\n", 1, true)
    local fmt, status, stored = match(sub(value, 1, first - 1), "^(%S+) (%d+) (%d+)$")
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
        stored_at = tonumber(stored),
        headers = headers,
        body = sub(value, head_end + 2),
    }
end

---------------------------------------------------------------------------------------
-- Configuration
---------------------------------------------------------------------------------------

function _M.init(cfg)
    if not redis_lib then
        error("nginxgen.cache: no Redis client: install lua-resty-redis (OpenResty) "
              .. "or lua-nginx-redis (Debian)")
    end
    if not ngx_shared[cfg.state_dict] then
        error("nginxgen.cache: lua_shared_dict " .. cfg.state_dict .. " is missing")
    end
    local routes = {}
    for id, r in pairs(cfg.routes) do
        r.id = id
        r.status_set = set_of(r.statuses)
        if r.l1_dict and not ngx_shared[r.l1_dict] then
            error("nginxgen.cache: lua_shared_dict " .. r.l1_dict .. " is missing")
        end
        routes[id] = r
    end
    config = { routes = routes, redis = cfg.redis, state_dict = cfg.state_dict }
end

---------------------------------------------------------------------------------------
-- Redis, with fail-open bookkeeping in the state dict
---------------------------------------------------------------------------------------

-- May this request talk to Redis? No during a cool-down; right after one, only a single
-- probe at a time, so an outage costs one timeout per cool-down, not one per request.
local function redis_usable(state, r)
    if state:get(DOWN) then
        return false
    end
    if state:get(SUSPECT) then
        local probe_ttl = (r.connect_timeout + 2 * r.read_timeout) / 1000 + 1
        return (state:add(PROBE, true, probe_ttl))
    end
    return true
end

local function redis_failed(state, r, what, err)
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

local function redis_worked(state)
    if state:get(ERRORS) then
        state:delete(ERRORS)
    end
    if state:get(SUSPECT) then
        state:delete(SUSPECT)
        state:delete(PROBE)
        ngx_log(WARN, "nginxgen.cache: redis is back; caching resumes")
    end
end

local function connect(r)
    local red, err = redis_lib:new()
    if not red then
        return nil, err
    end
    local resty = redis_flavor == "resty.redis"
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

-- value, or nil on a miss; (nil, err) when Redis failed.
local function redis_get(key)
    local r = config.redis
    local red, err = connect(r)
    if not red then
        return nil, err
    end
    local value
    value, err = red:get(key)
    if err then
        red:close()
        return nil, err
    end
    done(red, r)
    if value == ngx.null then
        return nil
    end
    return value
end

local function redis_set(key, value, ttl_ms)
    local r = config.redis
    local red, err = connect(r)
    if not red then
        return nil, err
    end
    local ok
    ok, err = red:set(key, value, "PX", ttl_ms)
    if not ok then
        red:close()
        return nil, err
    end
    done(red, r)
    return true
end

---------------------------------------------------------------------------------------
-- Phases
---------------------------------------------------------------------------------------

local function lock_key(key)
    return "lock:" .. key
end

local function serve(st, value)
    local entry = _M.decode(value)
    if not entry then
        return false
    end
    st.hit = true
    ngx.status = entry.status
    local values = {}
    for _, pair in ipairs(entry.headers) do
        local name = pair[1]
        local prev = values[name]
        if prev == nil then
            values[name] = pair[2]
        elseif type(prev) == "table" then
            prev[#prev + 1] = pair[2]
        else
            values[name] = { prev, pair[2] }
        end
    end
    for name, v in pairs(values) do
        ngx_header[name] = v
    end
    local body = entry.body
    ngx_header["Content-Length"] = #body
    ngx_header["Age"] = floor(ngx_now() - entry.stored_at)
    ngx_header["X-Cache"] = "HIT"
    if not st.head then
        ngx.print(body)
    end
    return ngx.exit(ngx.HTTP_OK)
end

-- L1, then Redis. Returns value | nil (miss) | false (Redis unusable or failed).
local function lookup(st, state, route)
    local key = st.key
    local l1 = route.l1_dict and ngx_shared[route.l1_dict]
    if l1 then
        local value = l1:get(key)
        if value then
            return value
        end
    end
    local r = config.redis
    if not redis_usable(state, r) then
        return false
    end
    local value, err = redis_get(key)
    if err then
        redis_failed(state, r, "read", err)
        return false
    end
    redis_worked(state)
    if value and l1 then
        l1:set(key, value, route.l1_ttl)
    end
    return value
end

function _M.access(route_id)
    local route = config.routes[route_id]
    if not route then
        return  -- configured without this route: proxy as usual
    end
    local st = { route = route, xcache = "BYPASS" }
    ngx.ctx.nginxgen_cache = st
    local method = ngx_req.get_method()
    local reason = _M.bypass_reason(route, method, {
        authorization = ngx_var.http_authorization,
        cookie = ngx_var.http_cookie,
        cache_control = ngx_var.http_cache_control,
        pragma = ngx_var.http_pragma,
    })
    if reason then
        return
    end
    local args, err = ngx_req.get_uri_args(MAX_ARGS)
    if err == "truncated" then
        return
    end
    -- HEAD is answered from the GET entry, like nginx's proxy_cache_convert_head.
    st.key = _M.cache_key(config.redis.key_prefix, "GET", ngx_var.scheme,
                          route.key_host or ngx_var.host, ngx_var.request_uri, args)
    st.head = method == "HEAD"

    local state = ngx_shared[config.state_dict]
    local value = lookup(st, state, route)
    if value == false then
        return  -- BYPASS: Redis is unusable right now
    end
    if value and serve(st, value) ~= false then
        return
    end
    st.xcache = "MISS"
    if st.head then
        return  -- a HEAD response has no body to store
    end
    -- One request per key fills; the others wait for it, then read what it stored.
    if state:add(lock_key(st.key), true, route.lock_ttl) then
        st.fill = true
        return
    end
    local deadline = ngx_now() + route.stampede_wait
    local step = 0.005
    while ngx_now() < deadline do
        ngx_sleep(step)
        step = min(step * 2, 0.05)
        if not state:get(lock_key(st.key)) then
            value = lookup(st, state, route)
            if value and serve(st, value) ~= false then
                return
            end
            break
        end
    end
    if value == false then
        st.xcache = "BYPASS"
    end
end

function _M.header_filter()
    local st = ngx.ctx.nginxgen_cache
    if not st or st.hit then
        return
    end
    ngx_header["X-Cache"] = st.xcache
    if not st.fill then
        return
    end
    local route = st.route
    local status = ngx.status
    local ok = _M.storable(route, status, {
        set_cookie = ngx_header["Set-Cookie"],
        cache_control = ngx_header["Cache-Control"],
        content_length = ngx_header["Content-Length"],
        content_encoding = ngx_header["Content-Encoding"],
        vary = ngx_header["Vary"],
    })
    if not ok then
        return
    end
    local headers = {}
    for _, name in ipairs(route.headers) do
        local v = ngx_header[name]
        if type(v) == "table" then
            for _, one in ipairs(v) do
                headers[#headers + 1] = { name, one }
            end
        elseif v ~= nil then
            headers[#headers + 1] = { name, v }
        end
    end
    st.status = status
    st.headers = headers
    st.chunks = {}
    st.size = 0
    st.collect = true
end

function _M.body_filter()
    local st = ngx.ctx.nginxgen_cache
    if not st or not st.collect then
        return
    end
    local chunk = ngx.arg[1]
    if chunk ~= "" then
        local size = st.size + #chunk
        if size > st.route.max_body then
            st.collect, st.chunks = false, nil  -- over the cap (no Content-Length was sent)
            return
        end
        st.size = size
        st.chunks[#st.chunks + 1] = chunk
    end
    if ngx.arg[2] then
        st.complete = true
    end
end

local function release(key)
    local state = ngx_shared[config.state_dict]
    state:delete(lock_key(key))
end

local function store(premature, route, key, value)
    if not premature then
        local state = ngx_shared[config.state_dict]
        local r = config.redis
        if redis_usable(state, r) then
            local ok, err = redis_set(key, value, route.ttl)
            if ok then
                redis_worked(state)
                local l1 = route.l1_dict and ngx_shared[route.l1_dict]
                if l1 then
                    l1:set(key, value, route.l1_ttl)
                end
            else
                redis_failed(state, r, "write", err)
            end
        end
    end
    release(key)
end

function _M.log()
    local st = ngx.ctx.nginxgen_cache
    if not st or not st.fill then
        return
    end
    if st.collect and st.complete then
        local value = _M.encode(st.status, st.headers, concat(st.chunks), ngx_now())
        local ok, err = ngx.timer.at(0, store, st.route, st.key, value)
        if ok then
            return  -- the timer releases the lock once the entry is in Redis
        end
        ngx_log(ERR, "nginxgen.cache: cannot start the store timer: ", err)
    end
    release(st.key)
end

return _M
