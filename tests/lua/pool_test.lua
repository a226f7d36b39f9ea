-- Unit tests for nginxgen.balancer.pool (run inside nginx by test_lua_suites.py).

local t = require("harness")

local s = t.suite()
local eq, ok = t.eq, t.ok

local function pool()
    t.fresh({ "nginxgen.balancer.pool" })
    return require("nginxgen.balancer.pool")
end

-- peers("a:5", "b:1", ...) with optional flags: "b:1:backup", "c:2:draining", "d:1:down".
local function entry(...)
    local peers = {}
    for i, spec in ipairs({ ... }) do
        local name, w, flag = spec:match("^(%w+):(%d+):?(%a*)$")
        peers[i] = {
            host = "10.0.0." .. string.byte(name) - 96, port = 80, weight = tonumber(w),
            state = (flag == "draining" or flag == "down") and flag or "up",
            backup = flag == "backup", max_fails = 1, fail_timeout = 10,
        }
    end
    return { peers = peers }
end

local function name_of(p)
    return p and string.char(96 + tonumber(p.host:match("(%d+)$"))) or "-"
end

local function picks(m, p, n, tried, out, key, conns)
    local seq = {}
    for i = 1, n do
        seq[i] = name_of(m.pick(p, tried, out, key, conns))
    end
    return table.concat(seq)
end

local function shares(m, p, n, keyf)
    local count = {}
    for i = 1, n do
        local k = name_of(m.pick(p, nil, nil, keyf and keyf(i)))
        count[k] = (count[k] or 0) + 1
    end
    return count
end

s.case("round robin is nginx's smooth sequence, weights exact", function()
    local m = pool()
    eq(picks(m, m.new(entry("a:5", "b:1", "c:1"), "round_robin"), 14), "aabacaaaabacaa")
    local c = shares(m, m.new(entry("a:1", "b:3"), "round_robin"), 4000)
    eq(c.a, 1000)
    eq(c.b, 3000)
    eq(picks(m, m.new(entry("a:1", "b:1", "c:1"), "round_robin"), 6), "abcabc")
end)

s.case("tried and failed peers are skipped; backups only when no primary can", function()
    local m = pool()
    local p = m.new(entry("a:1", "b:1", "z:1:backup"), "round_robin")
    eq(picks(m, p, 4, { ["10.0.0.1:80"] = true }), "bbbb")
    local out = function(peer)
        return peer.host == "10.0.0.2"
    end
    eq(picks(m, p, 3, { ["10.0.0.1:80"] = true }, out), "zzz")
    eq(name_of(m.pick(p, { ["10.0.0.1:80"] = true, ["10.0.0.2:80"] = true, ["10.0.0.26:80"] = true })), "-")
    eq(p.tries, 3, "tries default: every peer once, as nginx")
    eq(m.new({ peers = entry("a:1", "b:1", "c:1").peers, tries = 2 }, "round_robin").tries, 2)
    eq(m.new({ peers = entry("a:1", "b:1").peers, tries = 5 }, "round_robin").tries, 2,
        "no more tries than usable peers")
    eq(m.new({ peers = {} }, "round_robin").tries, 1)
end)

s.case("draining and down peers get no new requests but stay known", function()
    local m = pool()
    local p = m.new(entry("a:1", "b:5:draining", "c:5:down"), "round_robin")
    eq(picks(m, p, 5), "aaaaa")
    eq(#p.all, 3)
    eq(picks(m, m.new(entry("b:0:draining", "c:5:down"), "round_robin"), 2), "--")
end)

s.case("a failure lowers the effective weight, which climbs back by one per pick", function()
    local m = pool()
    local e = entry("a:4", "b:4")
    for _, peer in ipairs(e.peers) do
        peer.max_fails = 2
    end
    local p = m.new(e, "round_robin")
    local a = p.all[1]
    m.penalize(a)
    eq(a.ew, 2, "4 - 4/2")
    m.penalize(a)
    m.penalize(a)
    eq(a.ew, 0, "never below 0")
    local c = shares(m, p, 8)
    ok(c.b > c.a, "b takes more while a recovers")
    eq(a.ew, 4, "back to its weight")
end)

s.case("one server alone ignores failures, as nginx does", function()
    local m = pool()
    local p = m.new(entry("a:1", "b:1:draining"), "round_robin")
    ok(p.single, "single")
    eq(name_of(m.pick(p, nil, function()
        return true
    end)), "a")
end)

s.case("nobody: no primary up with a weight and no backup", function()
    local m = pool()
    ok(m.new(entry("a:1:down", "b:0", "c:2:draining"), "round_robin").nobody, "down, weight 0, draining")
    ok(m.new({ peers = {} }, "round_robin").nobody, "no peers")
    ok(not m.new(entry("a:1:down", "z:1:backup"), "round_robin").nobody, "a backup serves")
    ok(not m.new(entry("a:1"), "hash").nobody, "one up")
end)

s.case("least_conn picks the fewest active per weight, ties by round robin", function()
    local m = pool()
    local p = m.new(entry("a:1", "b:1", "c:2"), "least_conn")
    local conns = { ["10.0.0.1:80"] = 2, ["10.0.0.2:80"] = 0, ["10.0.0.3:80"] = 1 }
    eq(name_of(m.pick(p, nil, nil, nil, conns)), "b")
    conns["10.0.0.2:80"] = 3
    eq(name_of(m.pick(p, nil, nil, nil, conns)), "c", "1/2 beats 2/1")
    local idle = {}
    local c = {}
    for _ = 1, 400 do
        local k = name_of(m.pick(p, nil, nil, nil, idle))
        c[k] = (c[k] or 0) + 1
    end
    eq(c.a, 100)
    eq(c.b, 100)
    eq(c.c, 200)
end)

s.case("random follows the weights", function()
    local m = pool()
    math.randomseed(42)
    local c = shares(m, m.new(entry("a:1", "b:3"), "random"), 20000)
    ok(math.abs(c.b / 20000 - 0.75) < 0.02, "b share " .. c.b / 20000)
end)

s.case("hash keeps a key on its peer; a peer that is out moves only its keys", function()
    local m = pool()
    local p = m.new(entry("a:1", "b:1", "c:1", "d:1"), "hash")
    local before = {}
    for i = 1, 400 do
        before[i] = name_of(m.pick(p, nil, nil, "/item/" .. i))
        eq(name_of(m.pick(p, nil, nil, "/item/" .. i)), before[i], "stable")
    end
    local out = function(peer)
        return peer.host == "10.0.0.2"
    end
    local moved = 0
    for i = 1, 400 do
        local now = name_of(m.pick(p, nil, out, "/item/" .. i))
        ok(now ~= "b", "b is out")
        if before[i] ~= "b" then
            eq(now, before[i], "keys of other peers stay")
        else
            moved = moved + 1
        end
    end
    ok(moved > 50 and moved < 150, "about a quarter moved: " .. moved)
    local drained = m.new(entry("a:1", "b:1:draining", "c:1", "d:1"), "hash")
    for i = 1, 400 do
        if before[i] ~= "b" then
            eq(name_of(m.pick(drained, nil, nil, "/item/" .. i)), before[i], "draining keeps places")
        end
    end
end)

local function ring_map(m, e, n)
    local p = m.new(e, "consistent_hash")
    local out = {}
    for i = 1, n do
        out[i] = name_of(m.pick(p, nil, nil, "user-" .. i))
    end
    return out, p
end

s.case("consistent hash: a new peer takes about 1/n of the keys, from the others only", function()
    local m = pool()
    local n = 6000
    local before = ring_map(m, entry("a:1", "b:1", "c:1", "d:1", "e:1"), n)
    local after = ring_map(m, entry("a:1", "b:1", "c:1", "d:1", "e:1", "f:1"), n)
    local moved, count = 0, {}
    for i = 1, n do
        count[before[i]] = (count[before[i]] or 0) + 1
        if before[i] ~= after[i] then
            moved = moved + 1
            eq(after[i], "f", "a key only ever moves to the new peer")
        end
    end
    local share = moved / n
    ok(share > 1 / 6 - 0.06 and share < 1 / 6 + 0.06, "moved share " .. share)
    for _, k in ipairs({ "a", "b", "c", "d", "e" }) do
        ok(math.abs(count[k] / n - 0.2) < 0.07, k .. " share " .. count[k] / n)
    end
    -- and removing one moves only that peer's keys
    local fewer = ring_map(m, entry("a:1", "b:1", "d:1", "e:1"), n)
    for i = 1, n do
        if before[i] ~= "c" then
            eq(fewer[i], before[i], "others keep their keys")
        end
    end
end)

s.case("consistent hash: scaling every weight changes nothing; weights shape shares", function()
    local m = pool()
    local n = 3000
    local one = ring_map(m, entry("a:1", "b:1", "c:2"), n)
    local ten = ring_map(m, entry("a:10", "b:10", "c:20"), n)
    local count = {}
    for i = 1, n do
        eq(ten[i], one[i], "same ring")
        count[one[i]] = (count[one[i]] or 0) + 1
    end
    ok(math.abs(count.c / n - 0.5) < 0.08, "c share " .. count.c / n)
    local _, big = ring_map(m, entry("a:1000", "b:999", "c:997"), 1)
    ok(#big.pts <= m.MAX_POINTS, "ring capped: " .. #big.pts)
end)

s.case("consistent hash: a peer that is out hands its keys to the next on the ring", function()
    local m = pool()
    local n = 2000
    local before, p = ring_map(m, entry("a:1", "b:1", "c:1", "d:1"), n)
    local out = function(peer)
        return peer.host == "10.0.0.1"
    end
    for i = 1, n do
        local now = name_of(m.pick(p, nil, out, "user-" .. i))
        ok(now ~= "a", "a is out")
        if before[i] ~= "a" then
            eq(now, before[i], "others keep their keys")
        end
        local again = name_of(m.pick(p, nil, out, "user-" .. i))
        eq(again, now, "and the fallback is stable too")
    end
end)

return s
