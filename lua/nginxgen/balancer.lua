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
    local p, h = up.pool, up.health
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

-- rewrite_by_lua of a route (nginx.endpoints dynamic): a service whose endpoint set has
-- nobody to serve (no peer up with a weight, no backup) answers 503 on purpose, as a
-- rendered `return 503` does in reload mode — or gRPC UNAVAILABLE for a gRPC route. A
-- peer out for passive failures still counts: that is nginx's 502, from balance().
-- First, a worker behind the feed starts catching up (endpoints.catch_up).
function _M.available(name, grpc)
    endpoints.catch_up()
    local up = endpoints.upstream(name)
    local p = up and up.pool
    if p ~= nil and (#p.primary > 0 or #p.backup > 0) then
        return
    end
    if grpc then
        ngx.header["Content-Type"] = "application/grpc"
        ngx.header["grpc-status"] = "14"
        ngx.header["grpc-message"] = "unavailable"
        return ngx.exit(204)
    end
    ngx.status = 503
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Retry-After"] = "5"
    ngx.print('{"error":"service unavailable","service":', json.encode(name), "}")
    return ngx.exit(503)
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

function _M.log()
    local ctx = ngx.ctx
    local peer = ctx.nginxgen_peer
    if peer == nil then
        return
    end
    ctx.nginxgen_peer = nil
    finish(ctx.nginxgen_up, peer, last_failed())
end

return _M
