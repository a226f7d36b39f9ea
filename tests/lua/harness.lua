-- The one harness of the Lua unit suites (tests/lua/*_test.lua), which run inside a real
-- nginx (LuaJIT, lua-nginx-module, lua-resty-core, as in production); test_lua_suites.py
-- runs each suite with run_suite(name) and reads its answer.
--
--   suite()            a suite: `local s = h.suite()`, `s.case(name, fn)` per case,
--                      `return s`; s.run() prints "ok <n>" or one "FAIL" line per case
--   run_suite(name)    loads suite `name` and runs it, both under the trap below
--   eq / ok / fails / contains   assertions
--   clock(start)       a clock the test drives: clock() reads it, clock.advance(s)
--   fake_dict(clock)   an ngx.shared dict in plain Lua on that clock, with an optional
--                      memory limit that makes safe_set answer "no memory"
--   no_globals(fn)     runs fn with _G locked: any global write (or read of an undefined
--                      global) fails the case, including at module load (see fresh());
--                      lua-nginx-module 0.10.23 runs requests on the real _G, so this
--                      holds for modules loaded by the master and by a request alike
--   fresh(names)       drops modules from package.loaded so the next require loads them
--                      again, under the trap

local _M = {}

local type = type
local pairs = pairs
local tostring = tostring
local error = error
local pcall = pcall
local sort = table.sort
local concat = table.concat

function _M.eq(got, want, what)
    if got ~= want then
        error((what or "value") .. ": got " .. tostring(got) .. ", want " .. tostring(want), 2)
    end
end

function _M.ok(cond, what)
    if not cond then
        error(what or "expected a true value", 2)
    end
end

-- fn must raise or return (nil, err); answers the error (a string or a table's .error).
function _M.fails(fn, what)
    local okc, a, b = pcall(fn)
    if okc and a ~= nil then
        error((what or "call") .. " should have failed", 2)
    end
    local err = okc and b or a
    if type(err) == "table" then
        return err.error, err
    end
    return tostring(err)
end

function _M.contains(text, part, what)
    if type(text) ~= "string" or not text:find(part, 1, true) then
        error((what or "text") .. ": " .. tostring(text) .. " does not contain " .. part, 2)
    end
end

local function lock_globals()
    local previous = getmetatable(_G)
    setmetatable(_G, {
        __newindex = function(_, k)
            error("global write: " .. tostring(k), 2)
        end,
        __index = function(_, k)
            error("read of an undefined global: " .. tostring(k), 2)
        end,
    })
    return previous
end

function _M.no_globals(fn)
    local previous = lock_globals()
    local okc, err = pcall(fn)
    setmetatable(_G, previous)
    if not okc then
        error(err, 0)
    end
end

function _M.fresh(names)
    for _, name in pairs(names) do
        package.loaded[name] = nil
    end
end

-- A suite of cases; run() prints one line per failure and "ok <n>" when all pass.
function _M.suite()
    local cases = {}
    local s = { cases = cases }
    function s.case(name, fn)
        cases[#cases + 1] = { name, fn }
    end
    function s.failures(prefix)
        local failed = {}
        for _, c in ipairs(cases) do
            local okc, err = pcall(_M.no_globals, c[2])
            if not okc then
                failed[#failed + 1] = "FAIL " .. (prefix or "") .. c[1] .. ": " .. tostring(err)
            end
        end
        return failed
    end
    function s.run(prefix)
        local failed = s.failures(prefix)
        if #failed == 0 then
            ngx.say("ok ", #cases)
        else
            ngx.say(concat(failed, "\n"))
        end
    end
    return s
end

-- Load suite `name` (and so the modules it requires at its top) under the trap, then run
-- its cases; a suite that does not load is one failure.
function _M.run_suite(name)
    local suite
    local okc, err = pcall(_M.no_globals, function()
        suite = require(name)
    end)
    if not okc then
        ngx.say("FAIL ", name, ": loading: ", tostring(err))
        return
    end
    suite.run(name .. ": ")
end

-- A lua_shared_dict stand-in. clock() gives seconds; `limit` (bytes) makes writes that
-- would exceed it fail with "no memory" (safe_*) or evict the oldest keys (set/add).
function _M.fake_dict(clock, limit)
    local data, expires, sizes, order = {}, {}, {}, {}
    local used = 0
    local d = {}

    local function live(key)
        local e = expires[key]
        if e and e <= clock() then
            used = used - (sizes[key] or 0)
            data[key], expires[key], sizes[key] = nil, nil, nil
        end
        return data[key] ~= nil
    end

    local function size_of(key, value)
        local n = type(value) == "string" and #value or 8
        return 64 + #key + n
    end

    local function put(key, value, exptime, safe)
        live(key)
        local need = size_of(key, value) - (sizes[key] or 0)
        if limit and used + need > limit then
            if safe then
                return false, "no memory"
            end
            for i = 1, #order do -- evict, oldest first, like the LRU of a real dict
                local k = order[i]
                if k ~= key and data[k] ~= nil then
                    used = used - sizes[k]
                    data[k], expires[k], sizes[k] = nil, nil, nil
                    if used + need <= limit then
                        break
                    end
                end
            end
        end
        if data[key] == nil then
            order[#order + 1] = key
        end
        data[key] = value
        used = used + need
        sizes[key] = (sizes[key] or 0) + need
        expires[key] = (exptime and exptime > 0) and clock() + exptime or nil
        return true
    end

    function d.get(_, key)
        if live(key) then
            return data[key]
        end
        return nil
    end
    function d.set(_, key, value, exptime)
        if value == nil then
            return d.delete(_, key)
        end
        return put(key, value, exptime, false)
    end
    function d.safe_set(_, key, value, exptime)
        return put(key, value, exptime, true)
    end
    function d.add(_, key, value, exptime)
        if live(key) then
            return false, "exists"
        end
        return put(key, value, exptime, false)
    end
    function d.safe_add(_, key, value, exptime)
        if live(key) then
            return false, "exists"
        end
        return put(key, value, exptime, true)
    end
    function d.delete(_, key)
        if data[key] ~= nil then
            used = used - (sizes[key] or 0)
        end
        data[key], expires[key], sizes[key] = nil, nil, nil
        return true
    end
    function d.incr(_, key, by, init, init_ttl)
        if not live(key) then
            if init == nil then
                return nil, "not found"
            end
            put(key, init + by, init_ttl, false)
            return init + by
        end
        local v = data[key]
        if type(v) ~= "number" then
            return nil, "not a number"
        end
        data[key] = v + by
        return v + by
    end
    function d.ttl(_, key)
        if not live(key) then
            return nil, "not found"
        end
        local e = expires[key]
        return e and (e - clock()) or 0
    end
    function d.get_keys(_, max)
        local keys = {}
        for k in pairs(data) do
            if live(k) then
                keys[#keys + 1] = k
            end
        end
        sort(keys)
        if max and max > 0 and #keys > max then
            for i = #keys, max + 1, -1 do
                keys[i] = nil
            end
        end
        return keys
    end
    function d.flush_all()
        data, expires, sizes, order, used = {}, {}, {}, {}, 0
    end
    function d.used()
        return used
    end
    return d
end

-- A clock the test moves: clock() → seconds; clock.advance(s).
function _M.clock(start)
    local now = start or 1000
    local c = {}
    setmetatable(c, {
        __call = function()
            return now
        end,
    })
    function c.advance(s)
        now = now + s
    end
    return c
end

return _M
