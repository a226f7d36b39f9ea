-- nginxgen.cache.stampede: one fill per key; waits bounded by how long the fill has run.

local h = require("harness")
local stampede = require("nginxgen.cache.stampede")

local t = h.suite()
local case, eq = t.case, h.eq

-- sleep(s) advances the clock and runs `during(now)` (the filler's doings) after it.
local function sleeper(clock, during)
    local slept = 0
    local function sleep(seconds)
        slept = slept + seconds
        clock.advance(seconds)
        if during then
            during(clock())
        end
    end
    return sleep, function() return slept end
end

case("one request per key takes the fill", function()
    local clock = h.clock()
    local state = h.fake_dict(clock)
    eq(stampede.acquire(state, "k", clock(), 3), true, "first")
    eq(stampede.acquire(state, "k", clock(), 3), false, "second")
    eq(stampede.acquire(state, "other", clock(), 3), true, "another key")
    stampede.release(state, "k")
    eq(stampede.acquire(state, "k", clock(), 3), true, "after the release")
end)

case("a waiter returns as soon as the fill is released", function()
    local clock = h.clock()
    local state = h.fake_dict(clock)
    local started = clock()
    stampede.acquire(state, "k", started, 3)
    local sleep, slept = sleeper(clock, function(now)
        if now - started >= 0.3 then
            stampede.release(state, "k")
        end
    end)
    eq(stampede.wait(state, "k", 2, clock, sleep), "released")
    if slept() < 0.3 or slept() > 0.36 then
        error("waited " .. slept() .. "s for a fill of 0.3s")
    end
end)

case("a waiter never waits past the fill's start plus the wait", function()
    local clock = h.clock()
    local state = h.fake_dict(clock)
    stampede.acquire(state, "k", clock(), 3)
    clock.advance(1.5)  -- the filler has run 1.5s of a 2s wait
    local sleep, slept = sleeper(clock)
    eq(stampede.wait(state, "k", 2, clock, sleep), "late")
    if math.abs(slept() - 0.5) > 1e-9 then
        error("waited " .. slept() .. "s, want the 0.5s left of the wait")
    end
end)

case("a waiter whose filler is already slower than the wait goes upstream at once", function()
    local clock = h.clock()
    local state = h.fake_dict(clock)
    stampede.acquire(state, "k", clock(), 3)
    clock.advance(2.5)
    local sleep, slept = sleeper(clock)
    eq(stampede.wait(state, "k", 2, clock, sleep), "late")
    eq(slept(), 0, "no wait at all")
end)

case("no lock, or another fill's lock, means look in the cache again", function()
    local clock = h.clock()
    local state = h.fake_dict(clock)
    local sleep = sleeper(clock)
    eq(stampede.wait(state, "k", 2, clock, sleep), "released", "no fill running")
    stampede.acquire(state, "k", clock(), 0.2)  -- a lock that expires before the fill ends
    local sleep2 = sleeper(clock, function(now)
        stampede.acquire(state, "k", now, 3)  -- a second fill takes the expired lock
    end)
    eq(stampede.wait(state, "k", 2, clock, sleep2), "released", "a new fill")
end)

case("a clock that does not move cannot make a waiter spin", function()
    local clock = h.clock()
    local state = h.fake_dict(clock)
    stampede.acquire(state, "k", clock(), 3)
    clock.advance(1.9995)  -- 0.5 ms of a 2s wait left
    local sleeps = {}
    local function frozen(seconds)  -- ngx.sleep(0) on stock nginx: the clock stays put
        sleeps[#sleeps + 1] = seconds
    end
    eq(stampede.wait(state, "k", 2, clock, frozen), "late")
    for _, s in ipairs(sleeps) do
        if s < 0.001 then
            error("slept " .. s .. "s: ngx.sleep below 1 ms does not advance nginx's clock")
        end
    end
    if #sleeps > 2002 then
        error(#sleeps .. " sleeps for a 2s wait")
    end
end)

return t
