-- Unit tests for nginxgen.balancer.health (run inside nginx by test_lua_suites.py).

local t = require("harness")

local s = t.suite()
local eq, ok = t.eq, t.ok

local function health()
    t.fresh({ "nginxgen.balancer.health" })
    return require("nginxgen.balancer.health")
end

local function peer(key, max_fails, fail_timeout)
    return { key = key or "10.0.0.1:80", max_fails = max_fails or 3, fail_timeout = fail_timeout or 10 }
end

s.case("max_fails failures within fail_timeout take a peer out for fail_timeout", function()
    local m = health()
    local clock = t.clock()
    local h = m.new(t.fake_dict(clock), "carts")
    local p = peer()
    eq(m.recent(h), false)
    eq(m.failed(h, p), false)
    eq(m.failed(h, p), false)
    eq(h.out(p), false, "two of three")
    ok(m.recent(h), "a failure is recent")
    eq(m.failed(h, p), true, "the third takes it out")
    eq(h.out(p), true)
    clock.advance(9.9)
    eq(h.out(p), true, "still out before fail_timeout")
    clock.advance(0.2)
    eq(h.out(p), false, "back after fail_timeout")
end)

s.case("failures further apart than fail_timeout do not add up", function()
    local m = health()
    local clock = t.clock()
    local h = m.new(t.fake_dict(clock), "carts")
    local p = peer()
    m.failed(h, p)
    m.failed(h, p)
    clock.advance(10.5)
    eq(m.failed(h, p), false)
    eq(m.failed(h, p), false)
    eq(h.out(p), false, "a new window began")
    eq(m.failed(h, p), true)
end)

s.case("a peer back from being out is on probation: one failure takes it out again", function()
    local m = health()
    local clock = t.clock()
    local h = m.new(t.fake_dict(clock), "carts")
    local p = peer()
    for _ = 1, 3 do
        m.failed(h, p)
    end
    clock.advance(11)
    eq(h.out(p), false)
    eq(m.state(h, p).probation, true)
    eq(m.failed(h, p), true, "one failure on probation")
    eq(h.out(p), true)
    clock.advance(11)
    m.succeeded(h, p)
    eq(m.state(h, p).probation, false, "an answer ends the probation")
    eq(m.failed(h, p), false, "max_fails counts again")
end)

s.case("max_fails 0 or fail_timeout 0 turn passive checks off", function()
    local m = health()
    local h = m.new(t.fake_dict(t.clock()), "carts")
    local off, zero = peer("10.0.0.1:80", 0, 10), peer("10.0.0.2:80", 3, 0)
    for _ = 1, 10 do
        eq(m.failed(h, off), false)
        eq(m.failed(h, zero), false)
    end
    eq(h.out(off), false)
    eq(h.out(zero), false)
end)

s.case("state belongs to upstream and ip:port, not to a list position", function()
    local m = health()
    local clock = t.clock()
    local dict = t.fake_dict(clock)
    local carts, users = m.new(dict, "carts"), m.new(dict, "users")
    for _ = 1, 3 do
        m.failed(carts, peer("10.0.0.1:80"))
    end
    eq(carts.out(peer("10.0.0.1:80")), true, "a new peer object with the same address")
    eq(carts.out(peer("10.0.0.2:80")), false)
    eq(users.out(peer("10.0.0.1:80")), false, "another upstream is not affected")
    eq(m.recent(users), false)
end)

s.case("reset marks every peer live again; the recent marker expires", function()
    local m = health()
    local clock = t.clock()
    local h = m.new(t.fake_dict(clock), "carts")
    local a, b = peer("10.0.0.1:80", 1), peer("10.0.0.2:80", 1)
    m.failed(h, a)
    m.failed(h, b)
    eq(h.out(a) and h.out(b), true)
    m.reset(h, { a, b })
    eq(h.out(a) or h.out(b), false)
    clock.advance(20.5)
    eq(m.recent(h), false, "nothing failed for twice fail_timeout")
end)

return s
