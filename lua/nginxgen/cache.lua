-- nginxgen.cache: answer hot reads from Redis inside nginx, fail open when Redis is not there.
--
-- nginxgen renders the configuration once into init_by_lua_block (`init`), and each cached
-- location calls four one-liners: access(route_id), header_filter(), body_filter(), log();
-- result() tells nginxgen.metrics whether the request was a hit, a miss or a bypass.
-- Per-request state lives in ngx.ctx; the module holds only that configuration and the
-- Redis client settings, never a socket. The parts:
--   nginxgen.cache.key       which requests may use the cache, and their key
--   nginxgen.cache.entry     which answers may be stored, for how long, and how
--   nginxgen.cache.redis     GET/SET through the pool, behind the fail-open breaker
--   nginxgen.cache.stampede  one fill per key, bounded waits for the others
--
-- A request is answered from L1 (optional shared dict), else Redis (X-Cache: HIT). A miss
-- takes a stampede lock and goes to the upstream through the location's normal proxy_pass
-- (X-Cache: MISS); its response is collected in body_filter and, when storable, written to
-- Redis from a timer started in the log phase (cosockets are unavailable in those phases).
-- Anything that makes caching unsafe or Redis unusable sends the request upstream with
-- X-Cache: BYPASS.

local key = require("nginxgen.cache.key")
local entry = require("nginxgen.cache.entry")
local redis = require("nginxgen.cache.redis")
local stampede = require("nginxgen.cache.stampede")

local ngx = ngx
local ngx_var = ngx.var
local ngx_header = ngx.header
local ngx_shared = ngx.shared
local ngx_req = ngx.req
local ngx_resp = ngx.resp
local ngx_now = ngx.now
local ngx_time = ngx.time
local ngx_sleep = ngx.sleep
local ngx_log = ngx.log
local ERR = ngx.ERR

local concat = table.concat
local floor = math.floor
local type = type
local pairs = pairs
local ipairs = ipairs
local error = error

local _M = { _VERSION = "0.2.0" }

-- Chosen once, at load time in the master: resty.redis (OpenResty) or nginx.redis (Debian).
local redis_lib, redis_flavor = redis.find_library()
_M.redis_flavor = redis_flavor

local MAX_ARGS = 100  -- more query arguments than this: not cached (key would be partial)
local MAX_REQ_HEADERS = 200  -- more request headers than this: not cached (same reason)
local MAX_RESP_HEADERS = 100  -- an answer with more headers is not stored (not replayable)
-- A fill asks for the whole answer: a client's Range or validators must not decide what
-- everyone else gets (a 206 or 304 is never stored). Hits always answer 200 in full.
local FILL_CLEARS = {
    "Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match",
    "If-Unmodified-Since",
}

local config = { routes = {}, redis = nil, state = nil, prefix = "" }

local function set_of(list)
    local out = {}
    for _, v in ipairs(list or {}) do
        out[v] = true
    end
    return out
end

function _M.init(cfg)
    if not redis_lib then
        error("nginxgen.cache: no Redis client: install lua-resty-redis (OpenResty) "
              .. "or lua-nginx-redis (Debian)")
    end
    local state = ngx_shared[cfg.state_dict]
    if not state then
        error("nginxgen.cache: lua_shared_dict " .. cfg.state_dict .. " is missing")
    end
    local routes = {}
    for id, r in pairs(cfg.routes) do
        r.id = id
        r.status_set = set_of(r.statuses)
        r.identity = r.identity or {}
        r.key_headers = r.key_headers or {}
        if r.l1_dict and not ngx_shared[r.l1_dict] then
            error("nginxgen.cache: lua_shared_dict " .. r.l1_dict .. " is missing")
        end
        routes[id] = r
    end
    config = {
        routes = routes,
        redis = redis.new(cfg.redis, state, redis_lib, redis_flavor),
        state = state,
        prefix = cfg.redis.key_prefix,
    }
end

---------------------------------------------------------------------------------------
-- Access: hit, wait, or go upstream
---------------------------------------------------------------------------------------

-- The identity the gateway forwards and the route's key headers, as key parts (nil: the
-- route keys on neither; nil, err: this request cannot be keyed).
local function extra_parts(route)
    local identity, names = route.identity, route.key_headers
    if #identity == 0 and #names == 0 then
        return nil
    end
    local parts = {}
    for _, var in ipairs(identity) do
        parts[#parts + 1] = key.part(ngx_var[var])
    end
    if #names > 0 then
        local headers, err = ngx_req.get_headers(MAX_REQ_HEADERS)
        if err == "truncated" then
            return nil, err  -- a key header past the limit would reach the backend unkeyed
        end
        for _, name in ipairs(names) do
            parts[#parts + 1] = key.part(headers[name])
        end
    end
    return parts
end

local function serve(st, value)
    local e = entry.decode(value)
    if not e then
        return false
    end
    st.hit = true
    ngx.status = e.status
    local values = {}
    for _, pair in ipairs(e.headers) do
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
    local body = e.body
    ngx_header["Content-Length"] = #body
    ngx_header["Age"] = floor(ngx_now() - e.stored_at)
    ngx_header["X-Cache"] = "HIT"
    if not st.head then
        ngx.print(body)
    end
    return ngx.exit(ngx.HTTP_OK)
end

-- Keep a copy in L1 for at most `ttl` seconds, and never past the entry's own expiry.
local function remember(l1, k, value, ttl)
    local e = entry.decode(value)
    if e then
        local left = e.expires_at - ngx_now()
        if left > 0 then
            l1:set(k, value, left < ttl and left or ttl)
        end
    end
end

-- L1, then Redis. Returns value | nil (miss) | false (Redis unusable or failed).
local function lookup(st, route)
    local k = st.key
    local l1 = route.l1_dict and ngx_shared[route.l1_dict]
    if l1 then
        local value = l1:get(k)
        if value then
            return value
        end
    end
    local value = config.redis:get(k)
    if value and l1 then
        remember(l1, k, value, route.l1_ttl)
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
    local reason = key.bypass_reason(route, method, {
        authorization = ngx_var.http_authorization,
        cookie = ngx_var.http_cookie,
        cache_control = ngx_var.http_cache_control,
        pragma = ngx_var.http_pragma,
        content_length = ngx_var.http_content_length,
        transfer_encoding = ngx_var.http_transfer_encoding,
    })
    if reason then
        return
    end
    local args, err = ngx_req.get_uri_args(MAX_ARGS)
    if err == "truncated" then
        return
    end
    local extra
    extra, err = extra_parts(route)
    if err then
        return
    end
    -- HEAD is answered from the GET entry, like nginx's proxy_cache_convert_head.
    st.key = key.cache_key(config.prefix, "GET", ngx_var.scheme,
                           route.key_host or ngx_var.host, ngx_var.request_uri, args, extra)
    st.head = method == "HEAD"

    local value = lookup(st, route)
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
    local state = config.state
    if stampede.acquire(state, st.key, ngx_now(), route.lock_ttl) then
        st.fill = true
        for _, name in ipairs(FILL_CLEARS) do
            ngx_req.clear_header(name)
        end
        return
    end
    if stampede.wait(state, st.key, route.stampede_wait, ngx_now, ngx_sleep) == "released" then
        value = lookup(st, route)
        if value and serve(st, value) ~= false then
            return
        end
        if value == false then
            st.xcache = "BYPASS"
        end
    end
end

---------------------------------------------------------------------------------------
-- Filters and log: collect a fill's answer, store it from a timer
---------------------------------------------------------------------------------------

function _M.header_filter()
    local st = ngx.ctx.nginxgen_cache
    if not st or st.hit then
        return
    end
    ngx_header["X-Cache"] = st.xcache
    if not st.fill then
        return
    end
    local status = ngx.status
    local ttl = entry.storable(st.route, status, {
        set_cookie = ngx_header["Set-Cookie"],
        cache_control = ngx_header["Cache-Control"],
        expires = ngx_header["Expires"],
        content_length = ngx_header["Content-Length"],
        content_encoding = ngx_header["Content-Encoding"],
        vary = ngx_header["Vary"],
    }, ngx_time())
    if not ttl then
        return
    end
    local headers, err = ngx_resp.get_headers(MAX_RESP_HEADERS, true)
    if err == "truncated" then
        return
    end
    st.status = status
    st.ttl = ttl
    st.headers = entry.stored_headers(headers)
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

local function store(premature, route, k, value, ttl)
    if not premature and config.redis:set(k, value, ttl) then
        local l1 = route.l1_dict and ngx_shared[route.l1_dict]
        if l1 then
            remember(l1, k, value, route.l1_ttl)
        end
    end
    stampede.release(config.state, k)
end

-- What the cache did with this request, for nginxgen.metrics: "hit", "miss", "bypass",
-- or nil (the route is not cached, or the request never reached the access phase).
function _M.result(ctx)
    local st = (ctx or ngx.ctx).nginxgen_cache
    if not st then
        return nil
    end
    if st.hit then
        return "hit"
    end
    return st.xcache == "MISS" and "miss" or "bypass"
end

function _M.log()
    local st = ngx.ctx.nginxgen_cache
    if not st or not st.fill then
        return
    end
    if st.collect and st.complete then
        local now = ngx_now()
        local value = entry.encode(st.status, st.headers, concat(st.chunks), now,
                                   now + st.ttl / 1000)
        local ok, err = ngx.timer.at(0, store, st.route, st.key, value, st.ttl)
        if ok then
            return  -- the timer releases the lock once the entry is in Redis
        end
        ngx_log(ERR, "nginxgen.cache: cannot start the store timer: ", err)
    end
    stampede.release(config.state, st.key)
end

return _M
