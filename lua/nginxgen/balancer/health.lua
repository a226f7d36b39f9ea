-- Passive health per peer, shared by all workers (nginx's `zone` behaviour), in a
-- lua_shared_dict keyed by upstream and ip:port — not by list position — so a push that
-- reorders, adds or removes peers keeps what was learnt about the others.
--
-- max_fails failures within fail_timeout (counted from the first of them) take a peer out
-- for fail_timeout. When it comes back it is on probation for one more fail_timeout: a
-- single failure then takes it out again, as nginx does for a server whose `checked` time
-- has passed; a success ends the probation. max_fails 0 (or fail_timeout 0) turns it off.
-- Keys: a|U   something failed in U recently (one lookup answers "all healthy")
--       f|U|K failures in the current window   d|U|K out   p|U|K on probation
-- Every key expires by itself, so peers that left the upstream leave no state behind; a
-- peer a push adds back (it left, or was not up) is back at once, on probation (returned).

local _M = {}

local function checked(peer)
    return peer.max_fails > 0 and peer.fail_timeout > 0
end

-- Health state of upstream `name` in `dict`.
function _M.new(dict, name)
    local h = { dict = dict, name = name, any = "a|" .. name, prefix = "|" .. name .. "|" }
    local prefix = h.prefix
    -- out(peer): the peer sits out its fail_timeout. Used as pool.pick's `out`.
    h.out = function(peer)
        return checked(peer) and dict:get("d" .. prefix .. peer.key) ~= nil
    end
    return h
end

-- Anything failed lately? When not, picking needs no per-peer lookup at all.
function _M.recent(h)
    return h.dict:get(h.any) ~= nil
end

local function mark_recent(h, ttl)
    local dict = h.dict
    local left = dict:ttl(h.any)
    if left == nil or (left > 0 and left < ttl) then
        dict:set(h.any, true, ttl)
    end
end

local function take_out(h, peer)
    local dict, ft, k = h.dict, peer.fail_timeout, h.prefix .. peer.key
    dict:set("d" .. k, true, ft)
    dict:set("p" .. k, true, 2 * ft)
    dict:delete("f" .. k)
    mark_recent(h, 2 * ft)
end

-- A failed attempt (get_last_failure() said "failed", or the last attempt never got a
-- response). Returns true when this failure took the peer out.
function _M.failed(h, peer)
    if not checked(peer) then
        return false
    end
    local dict, k = h.dict, h.prefix .. peer.key
    if dict:get("d" .. k) then
        return false -- already out; the window restarts when it is back
    end
    if dict:get("p" .. k) then
        take_out(h, peer)
        return true
    end
    local n = dict:incr("f" .. k, 1, 0, peer.fail_timeout)
    mark_recent(h, 2 * peer.fail_timeout)
    if n and n >= peer.max_fails then
        take_out(h, peer)
        return true
    end
    return false
end

-- An attempt that got an answer: a peer on probation is healthy again.
function _M.succeeded(h, peer)
    if _M.recent(h) then
        local dict, k = h.dict, h.prefix .. peer.key
        if dict:get("d" .. k) == nil and dict:get("p" .. k) then
            dict:delete("p" .. k)
            dict:delete("f" .. k)
        end
    end
end

-- nginx, when every peer has failed: "mark them as live for quick recovery".
function _M.reset(h, peers)
    local dict, prefix = h.dict, h.prefix
    for i = 1, #peers do
        local k = prefix .. peers[i].key
        dict:delete("d" .. k)
        dict:delete("f" .. k)
    end
end

-- Peers a push brought (back) into the upstream: {key, fail_timeout} each. The registry
-- and the probes have just vouched for them, so one that sits out is back at once — but
-- on probation for a fail_timeout, so a unit still broken is out after one failure, and a
-- registry check that flaps cannot buy a failing peer max_fails requests per flap. Peers
-- with no record stay without one.
function _M.returned(h, peers)
    local dict, prefix = h.dict, h.prefix
    for i = 1, #peers do
        local k, ft = prefix .. peers[i][1], peers[i][2]
        local d, f, p = "d" .. k, "f" .. k, "p" .. k
        if ft > 0 and (dict:get(d) or dict:get(f) or dict:get(p)) then
            dict:delete(d)
            dict:delete(f)
            dict:set(p, true, ft)
            mark_recent(h, ft)
        end
    end
end

-- What is known about one peer, for the status endpoint.
function _M.state(h, peer)
    local dict, k = h.dict, h.prefix .. peer.key
    local out = dict:ttl("d" .. k)
    return {
        fails = dict:get("f" .. k) or 0,
        out_for = out and out > 0 and out or nil,
        probation = dict:get("p" .. k) ~= nil,
    }
end

return _M
