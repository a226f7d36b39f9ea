-- Unit tests for nginxgen.endpoints.store (run inside nginx by test_lua_suites.py).

local t = require("harness")

local s = t.suite()
local eq, ok, contains = t.eq, t.ok, t.contains

local function store()
    t.fresh({ "nginxgen.endpoints.json", "nginxgen.endpoints.store" })
    return require("nginxgen.endpoints.store")
end

local function entry(n, tries)
    local peers = {}
    for i = 1, n do
        peers[i] = {
            host = "10.0.0." .. i, port = 8000 + i, weight = i, state = "up", backup = false,
            max_fails = 3, fail_timeout = 10,
        }
    end
    return { tries = tries, peers = peers }
end

local function snapshot(dict)
    local out = {}
    for _, k in ipairs(dict:get_keys(0)) do
        out[#out + 1] = k .. "=" .. tostring(dict:get(k))
    end
    return table.concat(out, "\n")
end

s.case("entries survive encode and decode", function()
    local m = store()
    local e = entry(2, 3)
    e.peers[2].host, e.peers[2].state, e.peers[2].backup = "::1", "draining", true
    e.peers[2].fail_timeout = 0.5
    local back = m.decode(m.encode(e))
    eq(back.tries, 3)
    eq(#back.peers, 2)
    for _, f in ipairs({ "host", "port", "weight", "state", "backup", "max_fails", "fail_timeout" }) do
        eq(back.peers[2][f], e.peers[2][f], f)
        eq(back.peers[1][f], e.peers[1][f], f)
    end
    eq(m.decode(m.encode({ peers = {} })).tries, nil)
    eq(#m.decode(m.encode({ peers = {} })).peers, 0)
    eq(m.decode("not json"), nil)
end)

s.case("a commit writes the entries, a log line and moves the generation last", function()
    local m = store()
    local d = t.fake_dict(t.clock())
    eq(m.commit(d, 5, { carts = entry(1), users = entry(2) }), 1)
    local g, q = m.generation(d)
    eq(g, 5)
    eq(q, 1)
    local changed, gen, seq = m.changes(d, 0)
    ok(changed.carts and changed.users, "both listed")
    eq(gen, 5)
    eq(seq, 1)
    local text, at = m.read(d, "carts")
    eq(at, 5)
    eq(#m.decode(text).peers, 1)
    eq(m.commit(d, 9, { carts = entry(3) }), 2)
    eq(d:get("s|carts|5"), nil, "the old entry is gone")
    changed, gen = m.changes(d, 1)
    ok(changed.carts and not changed.users, "only carts changed")
    eq(gen, 9)
    eq(#m.decode((m.read(d, "carts"))).peers, 3)
    eq(#m.decode((m.read(d, "users"))).peers, 2, "untouched")
    changed = m.changes(d, 2)
    eq(next(changed), nil, "nothing after the last commit")
end)

s.case("a commit that runs out of memory changes nothing", function()
    local m = store()
    local clock = t.clock()
    local d = t.fake_dict(clock, 3000)
    assert(m.commit(d, 1, { carts = entry(2) }))
    local before = snapshot(d)
    local seq, err = m.commit(d, 2, { carts = entry(3), users = entry(100) })
    eq(seq, nil)
    contains(err, "no memory")
    eq(snapshot(d), before, "dict unchanged")
    eq(m.generation(d), 1)
end)

s.case("a worker further behind than the log keeps must resync", function()
    local m = store()
    local d = t.fake_dict(t.clock())
    for g = 1, m.LOG_KEEP + 3 do
        assert(m.commit(d, g * 10, { carts = entry(1) }))
    end
    local changed, gen = m.changes(d, 1)
    eq(changed, nil, "log does not reach back")
    eq(gen, (m.LOG_KEEP + 3) * 10)
    ok(m.changes(d, 10) ~= nil, "a worker within the log replays it")
end)

s.case("the lock has one owner at a time and expires", function()
    local m = store()
    local clock = t.clock()
    local d = t.fake_dict(clock)
    local slept = 0
    local function sleep(sec)
        slept = slept + sec
    end
    eq(m.lock(d, "a", sleep, 0.05), "a")
    eq(m.lock(d, "b", sleep, 0.05), nil, "taken")
    ok(slept >= 0.05, "waited before giving up")
    m.unlock(d, "b")
    eq(d:get("lock"), "a", "only the owner unlocks")
    clock.advance(m.LOCK_TTL + 1)
    eq(m.lock(d, "b", sleep, 0), "b", "a dead owner's lock expires")
end)

s.case("forget drops a service; names lists the stored ones", function()
    local m = store()
    local d = t.fake_dict(t.clock())
    assert(m.commit(d, 3, { carts = entry(1), gone = entry(1) }))
    local names = m.names(d)
    table.sort(names)
    eq(table.concat(names, ","), "carts,gone")
    m.forget(d, "gone")
    eq(m.read(d, "gone"), nil)
    eq(d:get("s|gone|3"), nil)
    eq(table.concat(m.names(d), ","), "carts")
end)

s.case("heartbeats report each worker and expire", function()
    local m = store()
    local clock = t.clock()
    local d = t.fake_dict(clock)
    m.heartbeat(d, 0, 111, 7, 2)
    m.heartbeat(d, 1, 222, 5, 1)
    local w = m.workers(d, 3)
    eq(#w, 2)
    eq(w[1].pid, 111)
    eq(w[1].generation, 7)
    eq(w[2].seq, 1)
    clock.advance(m.HEARTBEAT_TTL + 0.1)
    eq(#m.workers(d, 3), 0)
end)

s.case("the test trap refuses global writes", function()
    local okc, err = pcall(t.no_globals, function()
        rawset(_G, "x", nil)
        local env = _G
        env.nginxgen_leak = 1
    end)
    eq(okc, false)
    contains(err, "global write: nginxgen_leak")
end)

return s
