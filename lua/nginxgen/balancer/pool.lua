-- The peers of one upstream and how one is picked: nginx's own algorithms, in Lua.
--
-- round_robin    smooth weighted round robin exactly as ngx_http_upstream_get_peer does it
--                (current += effective; pick the largest; subtract the total; effective
--                weight drops by weight/max_fails on a failure and climbs back by 1 a pick)
-- least_conn     fewest active requests per weight (this worker's count, as nginx without
--                a zone), ties broken by the same weighted round robin
-- random         weighted random; 20 draws, then round robin (as nginx)
-- hash, ip_hash  crc32 of the key over the weights; a peer that cannot take it rehashes,
--                20 times, then round robin (as nginx). Peers that are down or draining keep
--                their place, so the other peers' keys stay where they were.
-- consistent_hash  a ring of points per peer (160 per weight unit, like nginx's ketama),
--                placed by the peer's own address: adding or removing a peer moves only
--                about 1/n of the keys. Weights are divided by their common divisor first,
--                so scaling every weight (warm-up) changes nothing; beyond MAX_POINTS the
--                ring is scaled down and stops being stable against other peers' changes.
-- A pool never changes after new(): a push builds a new one. Only the selection counters
-- (current and effective weight) move, per worker, as in nginx without a zone.

local _M = {}

local ngx = ngx
local floor = math.floor
local random = math.random
local sort = table.sort
local byte = string.byte
local find = string.find
local format = string.format
local crc32 = ngx.crc32_long
local md5_bin = ngx.md5_bin
local tostring = tostring
local ipairs = ipairs
local max = math.max
local min = math.min
local huge = math.huge

_M.POINTS_PER_UNIT = 160
_M.MAX_POINTS = 16000
local REHASH = 20

local function gcd(a, b)
    while b ~= 0 do
        a, b = b, a % b
    end
    return a
end

local function hash32(text)
    local b1, b2, b3, b4 = byte(md5_bin(text), 1, 4)
    return ((b1 * 256 + b2) * 256 + b3) * 256 + b4
end

-- Points on the ring, sorted: pts[i] is a hash, own[i] the peer that owns it.
local function build_ring(peers)
    local g = 0
    for i = 1, #peers do
        g = gcd(peers[i].weight, g)
    end
    local want, total = {}, 0
    for i = 1, #peers do
        want[i] = _M.POINTS_PER_UNIT * peers[i].weight / g
        total = total + want[i]
    end
    local scale = total > _M.MAX_POINTS and _M.MAX_POINTS / total or 1
    local points = {}
    for i = 1, #peers do
        local key = peers[i].key
        for j = 1, max(1, floor(want[i] * scale)) do
            points[#points + 1] = { hash32(key .. "#" .. j), i }
        end
    end
    -- Ties (two peers on one point) resolve by address, so every worker builds one ring.
    sort(points, function(a, b)
        if a[1] ~= b[1] then
            return a[1] < b[1]
        end
        return peers[a[2]].key < peers[b[2]].key
    end)
    local pts, own = {}, {}
    for i = 1, #points do
        pts[i] = points[i][1]
        own[i] = points[i][2]
    end
    return pts, own
end

local function address(host)
    if find(host, ":", 1, true) then
        return "[" .. host .. "]" -- set_current_peer parses a URL: IPv6 needs brackets
    end
    return host
end

-- A peer's key, "ip:port" ("[ip6]:port"): what passive health and least_conn count by.
function _M.key(host, port)
    return format("%s:%d", address(host), port)
end

-- One peer as the pool keeps it. store.decode builds these directly (make_peer), so a
-- rebuild of 10,000 services allocates one table per peer, not two.
function _M.peer(host, port, weight, state, backup, max_fails, fail_timeout)
    local addr = address(host)
    return {
        host = host, addr = addr, port = port, key = format("%s:%d", addr, port),
        weight = weight, state = state, backup = backup,
        max_fails = max_fails, fail_timeout = fail_timeout,
        usable = state == "up" and weight > 0,
        cw = 0, ew = weight,
    }
end
local make_peer = _M.peer

-- `entry.peers`: peers from make_peer (taken over, not copied), or plain tables with
-- host, port, weight, state, backup, max_fails, fail_timeout as schema validated them.
-- `method` is a schema.BALANCE name.
function _M.new(entry, method)
    local all, primary, backup, hashed = {}, {}, {}, {}
    local max_ft = 0
    for i, p in ipairs(entry.peers) do
        local peer = p
        if p.key == nil then
            peer = make_peer(p.host, p.port, p.weight, p.state, p.backup, p.max_fails,
                p.fail_timeout)
        end
        all[i] = peer
        if peer.usable then
            if peer.backup then
                backup[#backup + 1] = peer
            else
                primary[#primary + 1] = peer
            end
        end
        if not peer.backup and peer.weight > 0 then
            hashed[#hashed + 1] = peer -- up, draining and down: places stay stable
        end
        if p.fail_timeout > max_ft then
            max_ft = p.fail_timeout
        end
    end
    local pool = {
        method = method,
        all = all,
        primary = primary,
        backup = backup,
        -- Never more tries than usable peers: when all were tried nginx ends the request
        -- with the last attempt's own status (504 for a timeout), not "no live upstreams".
        tries = max(1, min(entry.tries or huge, #primary + #backup)),
        -- nginx ignores max_fails for an upstream of one server: nothing else to try.
        single = #primary == 1 and #backup == 0,
        -- No primary up with a weight and no backup: nobody to serve on purpose (the
        -- balancer refuses it on a request's first try; the route answers 503).
        nobody = #primary == 0 and #backup == 0,
        max_fail_timeout = max_ft,
    }
    if method == "hash" or method == "ip_hash" then
        local cum, total = {}, 0
        for i = 1, #hashed do
            total = total + hashed[i].weight
            cum[i] = total
        end
        pool.hashed, pool.cum, pool.total = hashed, cum, total
    elseif method == "consistent_hash" then
        pool.hashed = hashed
        pool.pts, pool.own = build_ring(hashed)
    elseif method == "random" then
        local cum, total = {}, 0
        for i = 1, #primary do
            total = total + primary[i].weight
            cum[i] = total
        end
        pool.cum, pool.total = cum, total
    end
    return pool
end

local function skip(p, tried, out)
    return (tried ~= nil and tried[p.key]) or (out ~= nil and out(p))
end

-- nginx's smooth weighted round robin over `list`, skipping tried and failed peers.
local function round_robin(list, tried, out)
    local best, total = nil, 0
    for i = 1, #list do
        local p = list[i]
        if not skip(p, tried, out) then
            local ew = p.ew
            p.cw = p.cw + ew
            total = total + ew
            if ew < p.weight then
                p.ew = ew + 1
            end
            if best == nil or p.cw > best.cw then
                best = p
            end
        end
    end
    if best then
        best.cw = best.cw - total
    end
    return best
end
_M.round_robin = round_robin

local function least_conn(list, tried, out, conns)
    local best, bc, many = nil, 0, false
    for i = 1, #list do
        local p = list[i]
        if not skip(p, tried, out) then
            local c = conns[p.key] or 0
            if best == nil or c * best.weight < bc * p.weight then
                best, bc, many = p, c, false
            elseif c * best.weight == bc * p.weight then
                many = true
            end
        end
    end
    if not many then
        return best
    end
    local first, pick, total = best, nil, 0
    for i = 1, #list do
        local p = list[i]
        if not skip(p, tried, out) and (conns[p.key] or 0) * first.weight == bc * p.weight then
            p.cw = p.cw + p.ew
            total = total + p.ew
            if p.ew < p.weight then
                p.ew = p.ew + 1
            end
            if pick == nil or p.cw > pick.cw then
                pick = p
            end
        end
    end
    pick.cw = pick.cw - total
    return pick
end

-- First index i with cum[i] > w (cum ascending).
local function bisect(cum, w)
    local lo, hi = 1, #cum
    while lo < hi do
        local mid = floor((lo + hi) / 2)
        if cum[mid] > w then
            hi = mid
        else
            lo = mid + 1
        end
    end
    return lo
end

local function weighted_random(pool, tried, out)
    local list, total = pool.primary, pool.total
    if total > 0 then
        for _ = 1, REHASH do
            local p = list[bisect(pool.cum, floor(random() * total))]
            if not skip(p, tried, out) then
                return p
            end
        end
    end
    return round_robin(list, tried, out)
end

local function hash_pick(pool, key, tried, out)
    local list, total = pool.hashed, pool.total
    if total > 0 then
        local h = crc32(key)
        for attempt = 1, REHASH do
            local p = list[bisect(pool.cum, h % total)]
            if p.usable and not skip(p, tried, out) then
                return p
            end
            h = crc32(tostring(attempt) .. key)
        end
    end
    return round_robin(pool.primary, tried, out)
end

-- First point at or after h, wrapping around.
local function ring_index(pts, h)
    local lo, hi = 1, #pts
    if h > pts[hi] then
        return 1
    end
    while lo < hi do
        local mid = floor((lo + hi) / 2)
        if pts[mid] >= h then
            hi = mid
        else
            lo = mid + 1
        end
    end
    return lo
end

local function ring_pick(pool, key, tried, out)
    local pts, own, list = pool.pts, pool.own, pool.hashed
    local n = #pts
    if n > 0 then
        local i = ring_index(pts, crc32(key))
        local p = list[own[i]]
        if p.usable and not skip(p, tried, out) then
            return p
        end
        local seen, distinct = { [own[i]] = true }, 1
        for _ = 2, n do
            i = i + 1
            if i > n then
                i = 1
            end
            local o = own[i]
            if not seen[o] then
                seen[o] = true
                distinct = distinct + 1
                p = list[o]
                if p.usable and not skip(p, tried, out) then
                    return p
                end
                if distinct >= REHASH or distinct == #list then
                    break
                end
            end
        end
    end
    return round_robin(pool.primary, tried, out)
end

-- One peer for this request, or nil when none can take it. `tried` (peer key → true)
-- holds the peers this request already used; `out(peer)` says a peer is failed (nil: no
-- recent failure in this upstream); `key` feeds the hash methods; `conns` least_conn.
function _M.pick(pool, tried, out, key, conns)
    if pool.single then
        out = nil
    end
    local method = pool.method
    local p
    if method == "round_robin" then
        p = round_robin(pool.primary, tried, out)
    elseif method == "least_conn" then
        p = least_conn(pool.primary, tried, out, conns)
    elseif method == "consistent_hash" then
        p = ring_pick(pool, key or "", tried, out)
    elseif method == "hash" or method == "ip_hash" then
        p = hash_pick(pool, key or "", tried, out)
    else
        p = weighted_random(pool, tried, out)
    end
    if p == nil and #pool.backup > 0 then
        -- Backups only when no primary can take the request, as nginx's peers->next.
        if method == "least_conn" then
            p = least_conn(pool.backup, tried, out, conns)
        else
            p = round_robin(pool.backup, tried, out)
        end
    end
    return p
end

-- nginx's effective-weight penalty after a failure, for this worker's selection.
function _M.penalize(peer)
    if peer.max_fails > 0 then
        local ew = peer.ew - floor(peer.weight / peer.max_fails)
        peer.ew = ew < 0 and 0 or ew
    end
end

return _M
