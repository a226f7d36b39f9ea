-- One worker's request counters, kept in plain Lua tables, and their flush into the
-- shared dict (the way nginx-lua-prometheus and lua-resty-counter count).
--
-- observe() runs in the log phase of every request: it only reads what nginx already
-- has and adds to numbers in tables it finds by the route's label and the peer's
-- address (or, behind the Lua balancer, the key of the peer it picked: one ngx.var
-- read less). No shared dict, no lock, no string is built there. flush(), from a timer
-- every second and at worker exit, moves the counts into the dict with one incr per
-- changed number; the exposition (nginxgen.metrics.exposition) reads them from there.
--
-- Every label value comes from the config (route labels and services from the spec,
-- peers from nginx's upstreams or the endpoint feed) and is bounded on top: at most
-- `max_peers` peers per worker (more count as peer="other"), `max_versions` versions
-- per route (more: version="other"), 1,000 route labels the config did not declare
-- (more: route="other"). Peer series idle for `peer_ttl` seconds leave the dict, so
-- peers that come and go (pods) do not pile up.

local escape = require("nginxgen.metrics.exposition").escape

local _M = {}

local type = type
local tonumber = tonumber
local pairs = pairs
local find = string.find
local gmatch = string.gmatch
local format = string.format
local floor = math.floor

local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local CLASS = {} -- status → index in CLASSES; anything outside 100-599 counts as 5xx
for s = 100, 599 do
    CLASS[s] = floor(s / 100)
end
local CACHE_RESULTS = { "hit", "miss", "bypass" }
local CACHE_INDEX = { hit = 1, miss = 2, bypass = 3 }
local MAX_UNPLANNED = 1000 -- route labels nobody declared (a config older than this module)
local MAX_INVALID = 100 -- upstream addresses that are not ip:port, remembered as such
local SWEEP_EVERY = 60 -- seconds between two looks for idle peers
local MAX_TIMES = 1000 -- $upstream_response_time values remembered as numbers

_M.DEFAULTS = {
    max_peers = 1000,
    max_versions = 8,
    peer_ttl = 3600,
    buckets = { 0.005, 0.025, 0.1, 0.5, 2.5 },
}

local Registry = {}
Registry.__index = Registry

local function zeros(n)
    local t = {}
    for i = 1, n do
        t[i] = 0
    end
    return t
end

local function key(fam, labels, suffix)
    return fam .. "|" .. labels .. "|" .. suffix
end

-- cfg: { routes = { [label] = { service = name, cache = bool, versions = bool } },
--        buckets, max_peers, max_versions, peer_ttl } (validated by nginxgen.metrics)
-- cache_result(ctx): "hit" | "miss" | "bypass" | nil, for routes with `cache`.
function _M.new(cfg, cache_result)
    local buckets = cfg.buckets or _M.DEFAULTS.buckets
    local les = {}
    for i, b in ipairs(buckets) do
        les[i] = format("%g", b)
    end
    les[#buckets + 1] = "+Inf"
    local self = setmetatable({
        planned = cfg.routes or {},
        buckets = buckets,
        nbuckets = #buckets,
        les = les,
        max_peers = cfg.max_peers or _M.DEFAULTS.max_peers,
        max_versions = cfg.max_versions or _M.DEFAULTS.max_versions,
        peer_ttl = cfg.peer_ttl or _M.DEFAULTS.peer_ttl,
        cache_result = cache_result,
        routes = {}, -- label → route record, made at the route's first request
        services = {}, -- name → { labels, peers = { addr → record | false }, other }
        unplanned = 0,
        npeers = 0,
        invalid = 0,
        times = {}, -- $upstream_response_time → seconds (or false), see upstream_seconds
        several = {}, -- the values of `times` that list several attempts
        ntimes = 0,
        dirty_routes = {},
        dirty_peers = {},
        swept = 0,
        errors = 0, -- counts that could not be written yet (the dict refused them)
        evicting = false, -- the dict evicted other keys to take a write: too small
    }, Registry)
    return self
end

function Registry:service(name)
    local svc = self.services[name]
    if svc == nil then
        -- peers: $upstream_addr → record; keyed: the balancer's peer key → the same record
        svc = { name = name, labels = 'service="' .. escape(name) .. '"', peers = {}, keyed = {} }
        self.services[name] = svc
    end
    return svc
end

local function new_route(self, label, service, opts)
    local n = self.nbuckets + 1
    local r = {
        label = label,
        labels = 'route="' .. escape(label) .. '",service="' .. escape(service) .. '"',
        svc = self:service(service),
        cache = opts.cache == true,
        versions = opts.versions == true,
        req = { zeros(5) }, -- per version index, per status class
        vnames = { "default" },
        vindex = { default = 1 },
        dur = zeros(n),
        dur_sum = 0,
        up = zeros(n),
        up_sum = 0,
        cached = zeros(3),
        limited = 0,
        refused = { 0, 0 }, -- 401, 403
        dirty = false,
        keys = nil, -- made at the first flush
    }
    self.routes[label] = r
    return r
end

-- The record of a label seen for the first time: declared by init, or not (a config
-- rendered without the route table: counted by label, without service).
function Registry:route(label)
    if label == nil then
        label = ""
    end
    local r = self.routes[label]
    if r then
        return r
    end
    local decl = self.planned[label]
    if decl then
        return new_route(self, label, decl.service or "", decl)
    end
    if label == "" then
        return new_route(self, "", "", {}) -- no route matched: shown as route="-"
    end
    if self.unplanned >= MAX_UNPLANNED then
        return self.routes["\0other"] or new_route(self, "\0other", "", {})
    end
    self.unplanned = self.unplanned + 1
    return new_route(self, label, "", { cache = true })
end

function Registry:version(r, v)
    if type(v) ~= "string" or v == "" then
        return 1
    end
    local i = r.vindex[v]
    if i then
        return i
    end
    local names = r.vnames
    if #names > self.max_versions then -- "default" + max_versions named, then "other"
        local o = r.vindex["\0other"]
        if o then
            return o
        end
        v = "\0other"
    end
    i = #names + 1
    names[i] = v
    r.vindex[v] = i
    r.req[i] = zeros(5)
    if r.keys then
        r.keys.req[i] = nil -- made at the next flush
    end
    return i
end

local function slot(buckets, n, seconds)
    for i = 1, n do
        if seconds <= buckets[i] then
            return i
        end
    end
    return n + 1
end

-- "0.002, 0.010 : 0.001" (retries, internal redirects) → total seconds, or nil.
local function total_seconds(value)
    if value == nil then
        return nil
    end
    local total, seen = 0, false
    for n in gmatch(value, "[%d.]+") do
        local v = tonumber(n)
        if v then
            total = total + v
            seen = true
        end
    end
    return seen and total or nil
end

-- $upstream_response_time as seconds, remembered: tonumber parses a decimal exactly,
-- which costs more than the rest of observe(), and a worker sees few distinct values.
local function upstream_seconds(self, rt)
    local u = self.times[rt]
    if u == nil then
        u = tonumber(rt)
        if self.ntimes >= MAX_TIMES then
            self.times, self.several, self.ntimes = {}, {}, 0
        end
        if u == nil then
            u = total_seconds(rt) or false
            self.several[rt] = true -- "0.002, 0.010" or "-": not one attempt's time
        end
        self.times[rt] = u
        self.ntimes = self.ntimes + 1
    end
    return u
end

local function valid_peer(addr)
    return find(addr, "^%d+%.%d+%.%d+%.%d+:%d+$") ~= nil
        or find(addr, "^%[[%x:.]+%]:%d+$") ~= nil
        or find(addr, "^unix:") ~= nil
end

-- The record of one peer of a service: made on its first attempt, within the cap.
function Registry:peer(svc, addr)
    local p = svc.peers[addr]
    if p ~= nil then
        return p or nil
    end
    if not valid_peer(addr) then
        -- e.g. the upstream's name when nginx found no live peer: not an attempt
        if self.invalid < MAX_INVALID then
            self.invalid = self.invalid + 1
            svc.peers[addr] = false
        end
        return nil
    end
    if self.npeers >= self.max_peers then
        p = svc.other
        if p == nil then
            p = { labels = svc.labels .. ',peer="other"', n = zeros(5), dirty = false, seen = 0 }
            svc.other = p
        end
        return p
    end
    self.npeers = self.npeers + 1
    p = { addr = addr, labels = svc.labels .. ',peer="' .. escape(addr) .. '"', n = zeros(5),
          dirty = false, seen = 0 }
    svc.peers[addr] = p
    return p
end

local function count_peer(self, p, c)
    local n = p.n
    n[c] = n[c] + 1
    if not p.dirty then
        p.dirty = true
        local d = self.dirty_peers
        d[#d + 1] = p
    end
end

-- The slow path: a peer seen for the first time, or a request that tried several
-- ("a:80, b:80" with statuses "502, 200"): each attempt counts for its own peer.
function Registry:attempts(svc, addr, var, c)
    if not find(addr, ",", 1, true) and not find(addr, " : ", 1, true) then
        local p = self:peer(svc, addr)
        if p then
            count_peer(self, p, c)
        end
        return
    end
    local statuses = {}
    for s in gmatch(var.upstream_status or "", "[^%s,]+") do
        if s ~= ":" then
            statuses[#statuses + 1] = s
        end
    end
    local i = 0
    for a in gmatch(addr, "[^%s,]+") do
        if a ~= ":" then
            i = i + 1
            local p = self:peer(svc, a)
            if p then
                count_peer(self, p, CLASS[tonumber(statuses[i])] or 5)
            end
        end
    end
end

-- The peer of a request that the Lua balancer sent to the peer `key` and nowhere else:
-- $upstream_addr is read once per peer (its text is the peer's label, as in reload
-- mode), then the balancer's key finds the record. Any other request — retries, an
-- internal redirect that proxied again, an upstream the balancer does not serve, a
-- peer over max_peers — reads $upstream_addr each time.
function Registry:balanced(svc, key, rt, var, c)
    local p = key and not self.several[rt] and svc.keyed[key]
    if p then
        count_peer(self, p, c)
        return
    end
    local addr = var.upstream_addr
    if addr == nil then
        return
    end
    p = svc.peers[addr]
    if p then
        count_peer(self, p, c)
    elseif p == nil then
        self:attempts(svc, addr, var, c)
        p = svc.peers[addr]
    end
    if p and key and not self.several[rt] then
        svc.keyed[key] = p
    end
end

-- One request, in the log phase. label: $nginxgen_route; status: the response status;
-- seconds: the request's duration; addr, rt: $upstream_addr and $upstream_response_time
-- (both nil when no upstream was involved; addr nil alone when the caller left the peer
-- to `key`); var: ngx.var, read only when needed ($upstream_status after retries,
-- $upstream_addr when addr is nil); ctx(): ngx.ctx, asked for only by routes that need
-- it (versions, cache); key: the peer the Lua balancer picked (nginxgen.balancer.log()),
-- when it did.
function Registry:observe(label, status, seconds, addr, rt, var, ctx, key)
    local r = self.routes[label or ""]
    if r == nil then
        r = self:route(label)
    end
    local c = CLASS[status] or 5
    local vi = 1
    if r.versions then
        -- issue 15's hook: the split decision leaves the version that serves in ngx.ctx
        vi = self:version(r, ctx().nginxgen_version)
    end
    local t = r.req[vi]
    t[c] = t[c] + 1

    local buckets, nb = self.buckets, self.nbuckets
    local b = slot(buckets, nb, seconds)
    t = r.dur
    t[b] = t[b] + 1
    r.dur_sum = r.dur_sum + seconds

    if addr == nil and rt == nil then
        -- answered by the gateway itself: a refusal, a cache hit, a 503 route
        if status == 429 then
            r.limited = r.limited + 1
        elseif status == 401 then
            t = r.refused
            t[1] = t[1] + 1
        elseif status == 403 then
            t = r.refused
            t[2] = t[2] + 1
        end
    else
        local u = rt and upstream_seconds(self, rt)
        if u then
            b = slot(buckets, nb, u)
            t = r.up
            t[b] = t[b] + 1
            r.up_sum = r.up_sum + u
        end
        if addr == nil then
            self:balanced(r.svc, key, rt, var, c)
        else
            local p = r.svc.peers[addr]
            if p then
                count_peer(self, p, c)
            elseif p == nil then
                self:attempts(r.svc, addr, var, c)
            end
        end
    end

    if r.cache and self.cache_result then
        local i = CACHE_INDEX[self.cache_result(ctx())]
        if i then
            t = r.cached
            t[i] = t[i] + 1
        end
    end

    if not r.dirty then
        r.dirty = true
        local d = self.dirty_routes
        d[#d + 1] = r
    end
end

---------------------------------------------------------------------------------------
-- Flush: worker tables → shared dict
---------------------------------------------------------------------------------------

local function route_keys(self, r)
    local labels = r.label == "" and 'route="-",service=""' or r.labels
    if r.label == "\0other" then
        labels = 'route="other",service=""'
    end
    local k = { req = {}, dur = {}, up = {}, cached = {}, refused = {} }
    for i, le in ipairs(self.les) do
        k.dur[i] = key("d", labels, le)
        k.up[i] = key("u", labels, le)
    end
    k.dur_sum, k.up_sum = key("d", labels, "sum"), key("u", labels, "sum")
    for i, res in ipairs(CACHE_RESULTS) do
        k.cached[i] = key("c", labels, res)
    end
    k.limited = key("l", labels, "")
    k.refused[1], k.refused[2] = key("a", labels, "401"), key("a", labels, "403")
    k.labels = labels
    r.keys = k
    return k
end

local function version_keys(k, r, vi)
    local v = r.vnames[vi]
    local labels = k.labels .. ',version="' .. (v == "\0other" and "other" or escape(v)) .. '"'
    local out = {}
    for c = 1, 5 do
        out[c] = key("r", labels, CLASSES[c])
    end
    k.req[vi] = out
    return out
end

-- Adds `n` to `k`; false when the dict refused it (the count stays for the next flush).
local function put(self, dict, k, n, ttl)
    local ok, err, forcible = dict:incr(k, n, 0, ttl)
    if not ok then
        self.last_error = err
        return false
    end
    if forcible then
        self.evicting = true
    end
    if ttl then
        dict:expire(k, ttl)
    end
    return true
end

-- Moves every nonzero number of `t` to the dict keys `keys` (same indexes).
local function put_all(self, dict, t, keys, ttl)
    local left = false
    for i = 1, #t do
        local n = t[i]
        if n ~= 0 then
            if put(self, dict, keys[i], n, ttl) then
                t[i] = 0
            else
                left = true
            end
        end
    end
    return left
end

local function put_one(self, dict, r, field, k)
    local n = r[field]
    if n == 0 then
        return false
    end
    if put(self, dict, k, n) then
        r[field] = 0
        return false
    end
    return true
end

local function flush_route(self, dict, r)
    local k = r.keys or route_keys(self, r)
    local left = false
    for vi, t in pairs(r.req) do
        left = put_all(self, dict, t, k.req[vi] or version_keys(k, r, vi)) or left
    end
    left = put_all(self, dict, r.dur, k.dur) or left
    left = put_one(self, dict, r, "dur_sum", k.dur_sum) or left
    left = put_all(self, dict, r.up, k.up) or left
    left = put_one(self, dict, r, "up_sum", k.up_sum) or left
    left = put_all(self, dict, r.cached, k.cached) or left
    left = put_one(self, dict, r, "limited", k.limited) or left
    left = put_all(self, dict, r.refused, k.refused) or left
    return left
end

local function flush_peer(self, dict, p, now)
    local k = p.keys
    if k == nil then
        k = {}
        for c = 1, 5 do
            k[c] = key("p", p.labels, CLASSES[c])
        end
        p.keys = k
    end
    p.seen = now
    return put_all(self, dict, p.n, k, self.peer_ttl)
end

-- Peers without an attempt for peer_ttl leave this worker's tables (their dict keys
-- expire by themselves), so a pod that is gone frees its place under max_peers.
local function sweep(self, now)
    self.swept = now
    local idle = now - self.peer_ttl
    for _, svc in pairs(self.services) do
        svc.keyed = {} -- refilled by the next request to each peer
        for addr, p in pairs(svc.peers) do
            if p and not p.dirty and p.seen < idle then
                svc.peers[addr] = nil
                self.npeers = self.npeers - 1
            end
        end
    end
end

-- Moves this worker's counts into `dict`. Counts the dict refuses stay and are tried
-- again at the next flush; answers how many records kept some.
function Registry:flush(dict, now)
    local routes, peers = self.dirty_routes, self.dirty_peers
    self.dirty_routes, self.dirty_peers = {}, {}
    local kept = 0
    for i = 1, #routes do
        local r = routes[i]
        r.dirty = false
        if flush_route(self, dict, r) then
            r.dirty = true
            self.dirty_routes[#self.dirty_routes + 1] = r
            kept = kept + 1
        end
    end
    for i = 1, #peers do
        local p = peers[i]
        p.dirty = false
        if flush_peer(self, dict, p, now) then
            p.dirty = true
            self.dirty_peers[#self.dirty_peers + 1] = p
            kept = kept + 1
        end
    end
    if now - self.swept >= SWEEP_EVERY then
        sweep(self, now)
    end
    self.errors = kept
    return kept
end

return _M
