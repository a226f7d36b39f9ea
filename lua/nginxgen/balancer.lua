-- balancer_by_lua for nginxgen's dynamic upstreams: the peers come from the endpoint feed
-- (nginxgen.endpoints), the choice is nginx's own algorithm (nginxgen.balancer.pool),
-- passive health is shared by the workers (nginxgen.balancer.health).
--
--   upstream NAME {
--       server 0.0.0.1;   # placeholder: nginx needs one; never used
--       balancer_by_lua_block { require("nginxgen.balancer").balance("NAME", key) }
--       keepalive 32;     # after the balancer: a pool of connections per upstream
--   }
--   log_by_lua_block { require("nginxgen.balancer").log() }   # accounts the last attempt
--   (with metrics: require("nginxgen.metrics").log(require("nginxgen.balancer").log()))
--   location @nginxgen_503 { content_by_lua_block { require("nginxgen.balancer").unavailable() } }
--   location @nginxgen_grpc_500 { content_by_lua_block { require("nginxgen.balancer").grpc_error() } }
--
-- A pool with nobody to serve (no peer up with a weight, no backup) is refused on the
-- request's first try with ngx.ERROR: nginx answers 500 without contacting anyone, and the
-- route's `error_page 500 = @nginxgen_503` (gRPC: @nginxgen_grpc_500) turns it
-- into the 503 on purpose. This costs nothing on requests that are served: no Lua phase
-- of the route's own checks whether anyone is there. A peer out for passive failures is
-- not nobody: that stays nginx's 502.
--
-- `key` is the hash key computed by nginx (e.g. ngx.var.nginxgen_hash_NAME) for hash and
-- consistent_hash, nil otherwise; ip_hash reads the client address itself.
-- Per request: the first try picks a peer and allows tries-1 more; each retry reports the
-- attempt that ended (get_last_failure) and picks a peer this request has not tried.
-- balancer_by_lua cannot yield: only table lookups and shared dict gets happen here.

local endpoints = require("nginxgen.endpoints")
local pool = require("nginxgen.balancer.pool")
local health = require("nginxgen.balancer.health")
local json = require("nginxgen.endpoints.json")
local ngx_balancer = require("ngx.balancer")

local _M = {}

local ngx = ngx
local match = string.match
local tostring = tostring
local set_current_peer = ngx_balancer.set_current_peer
local set_more_tries = ngx_balancer.set_more_tries
local get_last_failure = ngx_balancer.get_last_failure
local pick = pool.pick

-- NGX_BUSY: nginx answers 502 "no live upstreams", as a stock upstream does.
local NGX_BUSY = -3
local QUIET = 10 -- seconds between two "no live peer" lines for one upstream, per worker

local function no_peer(up, name, why)
    local now = ngx.now()
    if up == nil then
        -- a config that calls balance() for an upstream the plan does not declare
        local hdict = ngx.shared[endpoints.health_dict_name()]
        if hdict == nil or hdict:add("q|" .. name, true, QUIET) then
            ngx.log(ngx.ERR, "nginxgen balancer: upstream ", name, " is not in the plan given to ",
                "nginxgen.endpoints.init: answering 502")
        end
    elseif now >= up.quiet_until then
        up.quiet_until = now + QUIET
        ngx.log(ngx.ERR, "nginxgen balancer: upstream ", name, ": ", why,
            "; answering 502 (logged once per ", QUIET, "s)")
    end
    return ngx.exit(NGX_BUSY)
end

-- The ip_hash key: the first three octets of an IPv4 client, all of an IPv6 one (nginx).
local function ip_key(addr)
    return match(addr, "^(%d+%.%d+%.%d+)%.%d+$") or addr
end

-- The attempt on `peer` ended: count a failure, or the answer of a peer on probation.
local function finish(up, peer, failed)
    if up.method == "least_conn" then
        local conns = up.conns
        local n = (conns[peer.key] or 1) - 1
        conns[peer.key] = n > 0 and n or nil
    end
    if failed then
        pool.penalize(peer)
        if health.failed(up.health, peer) then
            ngx.log(ngx.WARN, "nginxgen balancer: upstream ", up.name, " peer ", peer.key,
                " failed ", peer.max_fails, " time(s) within ", peer.fail_timeout,
                "s: out for ", peer.fail_timeout, "s")
        end
    else
        health.succeeded(up.health, peer)
    end
end

function _M.balance(name, key)
    local up = endpoints.upstream(name)
    if up == nil then
        return no_peer(nil, name)
    end
    local p = up.pool
    -- First try (no attempt ended yet; ngx.ctx not touched): the 500 the route's
    -- error_page answers as 503. A retry after a push emptied the pool is nginx's 502.
    if p.nobody and get_last_failure() == nil then
        -- A route that checked in its own Lua phase (cached, aggregate part) has no
        -- error_page for it: a push that emptied the pool since is nginx's 502 there.
        if ngx.ctx.nginxgen_checked then
            return no_peer(up, name, "no live peer (emptied since the route's check)")
        end
        return ngx.exit(ngx.ERROR)
    end
    if up.method == "ip_hash" then
        key = ip_key(ngx.var.remote_addr or "")
    end
    local ctx = ngx.ctx
    local prev = ctx.nginxgen_peer
    local tried
    if prev ~= nil then
        local state = get_last_failure()
        finish(ctx.nginxgen_up, prev, state == "failed")
        ctx.nginxgen_peer = nil
        tried = ctx.nginxgen_tried
        if tried == nil then
            tried = {}
            ctx.nginxgen_tried = tried
        end
        tried[prev.key] = true
    end
    local h = up.health
    local out = (not p.single and health.recent(h)) and h.out or nil
    local peer = pick(p, tried, out, key, up.conns)
    if peer == nil then
        if out ~= nil then
            health.reset(h, p.all) -- every peer failed: try them all again next time (nginx)
        end
        if #p.all == 0 then
            return no_peer(up, name, "no peers")
        end
        return no_peer(up, name, tried and "every usable peer has been tried"
            or "no live peer (all down, draining or failed)")
    end
    local ok, err = set_current_peer(peer.addr, peer.port)
    if not ok then
        return no_peer(up, name, "cannot use peer " .. peer.key .. ": " .. tostring(err))
    end
    if prev == nil and p.tries > 1 then
        set_more_tries(p.tries - 1) -- proxy_next_upstream_tries caps it per location
    end
    ctx.nginxgen_up, ctx.nginxgen_peer = up, peer
    if up.method == "least_conn" then
        up.conns[peer.key] = (up.conns[peer.key] or 0) + 1
    end
end

local function answer_503(name)
    ngx.status = 503
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Retry-After"] = "5"
    ngx.print('{"error":"service unavailable","service":', json.encode(name), "}")
    return ngx.exit(503)
end
-- The one place the 503 on purpose is written: split.available() answers with it too.
_M.answer_503 = answer_503

-- rewrite_by_lua of a cached route or an aggregate's part (nginx.endpoints dynamic): the
-- same 503 before the cache's access phase (which would take a stampede lock that an
-- error_page redirect drops) — or gRPC UNAVAILABLE for a gRPC route. Other routes need no
-- Lua phase for it: balance() refuses, and unavailable() answers.
function _M.available(name, grpc)
    local up = endpoints.upstream(name)
    local p = up and up.pool
    if p ~= nil and not p.nobody then
        ngx.ctx.nginxgen_checked = true -- see balance(): no error_page 500 on this route
        return
    end
    if grpc then
        ngx.header["Content-Type"] = "application/grpc"
        ngx.header["grpc-status"] = "14"
        ngx.header["grpc-message"] = "unavailable"
        return ngx.exit(204)
    end
    return answer_503(name)
end

-- content_by_lua of `location @nginxgen_503`, where a route's `error_page 500` goes. The
-- route set $nginxgen_service. The 503 on purpose, as a rendered `return 503` does in
-- reload mode, when the service has nobody to serve: balance() refused its pool, or (a
-- split service, which has an upstream per version and none of its own) the split found
-- no version ($nginxgen_split_upstream ""), or refused the chosen version's pool. Any
-- other 500 nginx made in the route (a Lua error, say) stays a 500.
function _M.unavailable()
    local var = ngx.var
    local service = var.nginxgen_service or ""
    local up = endpoints.upstream(service)
    if up == nil then
        local chosen = var.nginxgen_split_upstream
        if chosen == "" then
            return answer_503(service)
        end
        up = chosen ~= nil and endpoints.upstream(chosen) or nil
    end
    if up ~= nil and up.pool.nobody then
        return answer_503(service)
    end
    return ngx.exit(500)
end

-- content_by_lua of `location @nginxgen_grpc_500`, where a gRPC route's `error_page 500`
-- goes (its 502, 503 and 504 are UNAVAILABLE without Lua). The route set
-- $nginxgen_service. UNAVAILABLE (14: clients may retry) when balance() refused its pool
-- for nobody to serve; INTERNAL (13) for any other 500 nginx made in the route, a Lua
-- error say, which no retry mends. A trailers-only answer, as the rendered one.
function _M.grpc_error()
    local up = endpoints.upstream(ngx.var.nginxgen_service or "")
    local header = ngx.header
    header["Content-Type"] = "application/grpc"
    if up ~= nil and up.pool.nobody then
        header["grpc-status"] = "14"
        header["grpc-message"] = "unavailable"
    else
        header["grpc-status"] = "13"
        header["grpc-message"] = "gateway%20internal%20error" -- percent-encoded, as gRPC says
    end
    return ngx.exit(204)
end

-- The last attempt's outcome: it failed (in nginx's sense: an error, a timeout or an
-- invalid header — never a status the backend sent) when nginx answered 502 or 504 and
-- no response header came back. ngx.status first: reading a variable costs more than
-- the rest of the hook, and most answers are neither.
local function last_failed()
    local sent = ngx.status
    if sent ~= 502 and sent ~= 504 then
        return false
    end
    local status = match(ngx.var.upstream_status or "", "(%d+)%s*$")
    if status ~= "502" and status ~= "504" then
        return false
    end
    local times = ngx.var.upstream_header_time
    return times ~= nil and match(times, "([^%s,:]+)%s*$") == "-"
end

-- Answers the key ("10.0.0.1:8080") of the peer it accounted, for nginxgen.metrics.log.
function _M.log()
    local ctx = ngx.ctx
    local peer = ctx.nginxgen_peer
    if peer == nil then
        return nil
    end
    ctx.nginxgen_peer = nil
    finish(ctx.nginxgen_up, peer, last_failed())
    return peer.key
end

return _M
