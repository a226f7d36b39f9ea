-- A small test runner for nginxgen's Lua modules, run inside a real nginx by
-- tests/lua/test_cache_lua.py (LuaJIT, lua-nginx-module, lua-resty-core as in production).
--
-- A test module returns a suite: `local t = require("harness").suite()`, then
-- `t.case(name, fn)` per case and `return t`. run() prints "ok <n>" or one
-- "FAIL <module>: <case>: <why>" line per failure. While a case runs, writing a global
-- fails it: module state must live in locals, ngx.ctx or shared dicts.

local _M = {}

function _M.suite()
    local suite = { cases = {} }
    function suite.case(name, fn)
        suite.cases[#suite.cases + 1] = { name, fn }
    end
    return suite
end

function _M.eq(got, want, what)
    if got ~= want then
        error((what or "value") .. ": got " .. tostring(got) .. ", want " .. tostring(want), 2)
    end
end

-- A clock tests move by hand: clock() reads it, clock.advance(s) moves it.
function _M.clock(start)
    local now = start or 1000
    local c = {}
    setmetatable(c, { __call = function() return now end })
    function c.advance(seconds)
        now = now + seconds
    end
    return c
end

-- The parts of ngx.shared.DICT the cache uses, with expiry on a driven clock.
function _M.fake_dict(clock)
    local items = {}
    local d = { items = items }
    local function live(k)
        local item = items[k]
        if item and item.expires and item.expires <= clock() then
            items[k] = nil
            return nil
        end
        return item
    end
    function d:get(k)
        local item = live(k)
        return item and item.value
    end
    function d:set(k, v, ttl)
        items[k] = { value = v, expires = ttl and ttl > 0 and clock() + ttl or nil }
        return true
    end
    function d:add(k, v, ttl)
        if live(k) then
            return false, "exists"
        end
        return self:set(k, v, ttl)
    end
    function d:incr(k, by, init)
        local item = live(k)
        local value = (item and item.value or init) + by
        items[k] = { value = value, expires = item and item.expires }
        return value
    end
    function d:delete(k)
        items[k] = nil
    end
    return d
end

local function trap_globals()
    local previous = getmetatable(_G)
    setmetatable(_G, {
        __index = previous and previous.__index,
        __newindex = function(_, name)
            error("writes the global '" .. tostring(name) .. "'", 2)
        end,
    })
    return function()
        setmetatable(_G, previous)
    end
end

function _M.run(modules)
    local failed, total = 0, 0
    for _, module in ipairs(modules) do
        local suite = require(module)
        for _, c in ipairs(suite.cases) do
            total = total + 1
            local untrap = trap_globals()
            local ok, err = pcall(c[2])
            untrap()
            if not ok then
                failed = failed + 1
                ngx.say("FAIL ", module, ": ", c[1], ": ", err)
            end
        end
    end
    if failed == 0 then
        ngx.say("ok ", total)
    end
end

return _M
