-- Unit tests for nginxgen.split.decide and nginxgen.split (run inside nginx by
-- test_lua_suites.py; the suite nginx declares lua_shared_dict nginxgen_split).

local t = require("harness")

local s = t.suite()
local eq, ok, contains = t.eq, t.ok, t.contains

local function decide()
    t.fresh({ "nginxgen.split.decide" })
    return require("nginxgen.split.decide")
end

local function doc(weights, extra)
    local d = { versions = {}, sticky = "cookie_session", rules = {} }
    for i, w in ipairs(weights) do
        d.versions[i] = { name = w[1], upstream = "carts--" .. w[1], bps = w[2], live = w[3] ~= false }
    end
    for k, v in pairs(extra or {}) do
        d[k] = v
    end
    return d
end

local function getter(vars)
    return function(name)
        return vars[name]
    end
end

local function never()
    error("rand() called where the decision is sticky")
end

s.case("check accepts a plain 90/10 document", function()
    local m = decide()
    eq(m.check(doc({ { "blue", 9000 }, { "green", 1000 } })), nil)
end)

s.case("check refuses, in one sentence each, what Lua cannot serve", function()
    local m = decide()
    contains(m.check(doc({ { "blue", 9000 }, { "green", 900 } })), "add up to 10000")
    contains(m.check(doc({ { "blue", 9000 }, { "green", 1000, false } })), "no live instance")
    contains(m.check(doc({ { "blue", 10000 } }, { extra = 1 })), "unknown field")
    contains(m.check(doc({ { "bl ue", 10000 } })), "not a version name")
    contains(m.check(doc({ { "blue", 10000 } }, { sticky = "$cookie" })), "sticky")
    contains(m.check(doc({ { "blue", 10000 } }, {
        rules = { { kind = "header", name = "X-C", op = "matches", value = "(", to = "blue" } } })),
        "not a valid regex")
    contains(m.check(doc({ { "blue", 10000 } }, {
        rules = { { kind = "header", name = "X-C", op = "equals", value = "1", to = "green" } } })),
        "not one of the versions")
    contains(m.check(doc({ { "blue", 10000 } }, { mirror = { to = "blue", percent = 0 } })), "percent")
    contains(m.check(doc({ { "blue", 10000 } }), { ["carts--green"] = true }), "needs a reload")
    eq(m.check(doc({ { "blue", 0, false }, { "green", 0, false } })), nil, "nobody alive is a document")
end)

s.case("the same sticky key always lands on the same version", function()
    local m = decide()
    local c = m.compile(doc({ { "blue", 9000 }, { "green", 1000 } }))
    for i = 1, 500 do
        local key = "user-" .. i
        local first = m.decide(c, getter({ cookie_session = key }), never)
        for _ = 1, 3 do
            eq(m.decide(c, getter({ cookie_session = key }), never), first, key)
        end
    end
end)

s.case("90/10 over 20,000 keys lands within a point of 90/10", function()
    local m = decide()
    local c = m.compile(doc({ { "blue", 9000 }, { "green", 1000 } }))
    local green = 0
    for i = 1, 20000 do
        local v, why = m.decide(c, getter({ cookie_session = "k" .. i .. "-" .. i * 7919 }), never)
        eq(why, "sticky")
        if v.name == "green" then
            green = green + 1
        end
    end
    ok(math.abs(green / 20000 - 0.10) < 0.01, "green share " .. green / 20000)
end)

s.case("10 -> 20 % moves only the keys between the old and the new edge", function()
    local m = decide()
    local before = m.compile(doc({ { "blue", 9000 }, { "green", 1000 } }))
    local after = m.compile(doc({ { "blue", 8000 }, { "green", 2000 } }))
    local moved = 0
    for i = 1, 10000 do
        local key = "key" .. i
        local g = getter({ cookie_session = key })
        local a, b = m.decide(before, g, never).name, m.decide(after, g, never).name
        local bucket = m.bucket(key)
        if a ~= b then
            moved = moved + 1
            eq(a .. ">" .. b, "blue>green", key)
            ok(bucket >= 8000 and bucket < 9000, key .. " in bucket " .. bucket)
        else
            ok(bucket < 8000 or bucket >= 9000, key .. " stayed in bucket " .. bucket)
        end
    end
    ok(moved > 800 and moved < 1200, "moved " .. moved)
end)

s.case("rules come first, in order; a rule to a dead version falls through", function()
    local m = decide()
    local rules = {
        { kind = "header", name = "X-Canary", op = "equals", value = "1", to = "green" },
        { kind = "cookie", name = "canary", op = "matches", value = "^(always|yes)$", to = "green" },
        { kind = "query", name = "version", op = "equals", value = "blue", to = "blue" },
        { kind = "query", name = "version", op = "equals", value = "red", to = "red" },
    }
    local c = m.compile(doc({ { "blue", 10000 }, { "green", 0 }, { "red", 0, false } }, { rules = rules }))
    local function pick(vars)
        local v, why = m.decide(c, getter(vars), function() return 0 end)
        return v.name .. ":" .. why
    end
    eq(pick({ http_x_canary = "1" }), "green:rule")
    eq(pick({ http_x_canary = "2" }), "blue:random")
    eq(pick({ cookie_canary = "yes" }), "green:rule")
    eq(pick({ cookie_canary = "yesno" }), "blue:random")
    eq(pick({ http_x_canary = "1", arg_version = "blue" }), "green:rule", "first match wins")
    eq(pick({ arg_version = "red" }), "blue:random", "red has no live instance")
end)

s.case("sticky none (or no key) draws per request; nobody alive decides nothing", function()
    local m = decide()
    local d = doc({ { "blue", 5000 }, { "green", 5000 } })
    d.sticky = ""
    local c = m.compile(d)
    eq(m.decide(c, getter({}), function() return 4999 end).name, "blue")
    eq(m.decide(c, getter({}), function() return 5000 end).name, "green")
    local none = m.compile(doc({ { "blue", 0, false } }))
    eq(m.decide(none, getter({}), function() return 0 end), nil)
end)

local function state_file(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    return path
end

local UPS = { carts = { "carts--blue", "carts--green" } }
local TOKEN = string.rep("a", 64)

s.case("init reads the state file; a push is in force at the worker's next request", function()
    t.fresh({ "nginxgen.split" })
    local split = require("nginxgen.split")
    local json = require("nginxgen.endpoints.json")
    local blue = doc({ { "blue", 10000 }, { "green", 0 } })
    blue.sticky = ""
    local path = state_file(json.encode({ services = { carts = blue } }))
    split.init({ upstreams = UPS, state = path, token_sha256 = TOKEN })
    os.remove(path)
    eq(split.route("carts"), "carts--blue")
    eq(ngx.ctx.nginxgen_version, "blue")
    local dict = ngx.shared.nginxgen_split
    local green = doc({ { "blue", 0 }, { "green", 10000 } })
    green.sticky = ""
    dict:set("d|carts", json.encode(green))
    eq(split.route("carts"), "carts--blue", "cached until the counter moves")
    dict:incr("seq", 1, 0)
    eq(split.route("carts"), "carts--green")
    eq(split.route("nope"), "")
end)

s.case("no state file, or one Lua refuses: every version an equal share", function()
    t.fresh({ "nginxgen.split" })
    local split = require("nginxgen.split")
    split.init({ upstreams = UPS, state = "/nonexistent/split.json", token_sha256 = TOKEN })
    local text = ngx.shared.nginxgen_split:get("d|carts")
    contains(text, '"bps":5000')
    local path = state_file('{"services": {"carts": {"versions": []}}}')
    split.init({ upstreams = UPS, state = path, token_sha256 = TOKEN })
    os.remove(path)
    contains(ngx.shared.nginxgen_split:get("d|carts"), '"bps":5000')
    contains(t.fails(function()
        split.init({ upstreams = UPS, token_sha256 = "nope" })
    end), "token_sha256")
end)

s.case("mirror() copies its percent of requests to a live mirror version only", function()
    t.fresh({ "nginxgen.split" })
    local split = require("nginxgen.split")
    local json = require("nginxgen.endpoints.json")
    local d = doc({ { "blue", 10000 }, { "green", 0 } }, { mirror = { to = "green", percent = 25 } })
    local path = state_file(json.encode({ services = { carts = d } }))
    split.init({ upstreams = UPS, state = path, token_sha256 = TOKEN })
    os.remove(path)
    local copies = 0
    for _ = 1, 4000 do
        local to = split.mirror("carts")
        if to ~= "" then
            eq(to, "carts--green")
            copies = copies + 1
        end
    end
    ok(copies > 800 and copies < 1200, "copies " .. copies)
    d.versions[2].live = false
    ngx.shared.nginxgen_split:set("d|carts", json.encode(d))
    ngx.shared.nginxgen_split:incr("seq", 1, 0)
    eq(split.mirror("carts"), "", "a dead mirror gets no copies")
end)

return s
