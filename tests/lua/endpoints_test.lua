-- Unit tests for nginxgen.endpoints.init (run inside nginx by test_lua_suites.py, whose
-- config declares the two shared dicts; each case loads the module afresh).

local t = require("harness")

local s = t.suite()
local eq, ok, contains = t.eq, t.ok, t.contains

local DIGEST = ("ab"):rep(32)
local PLAN = '{"generation": 4, "upstreams": {"carts": {}}, '
    .. '"services": {"carts": {"peers": [{"host": "10.0.0.1", "port": 80}]}}}'

local function endpoints()
    t.fresh({ "nginxgen.endpoints.feed", "nginxgen.endpoints" })
    ngx.shared.nginxgen_endpoints:flush_all()
    return require("nginxgen.endpoints")
end

local function init_error(settings)
    local m = endpoints()
    local okc, err = pcall(m.init, settings)
    eq(okc, false, "init should refuse")
    return tostring(err)
end

s.case("init loads a plan given in pieces and serves it", function()
    local m = endpoints()
    local half = math.floor(#PLAN / 2)
    m.init({ plan = { PLAN:sub(1, half), PLAN:sub(half + 1) }, token_sha256 = DIGEST })
    local up = m.upstream("carts")
    ok(up ~= nil, "carts is known")
    eq(m.upstream("nope"), nil)
    eq(ngx.shared.nginxgen_endpoints:get("g"), 4)
end)

s.case("init names the setting that is wrong", function()
    contains(init_error({ plan = PLAN, token_sha256 = "abc" }), "token_sha256")
    contains(init_error({ plan = PLAN, token_sha256 = DIGEST, snapshto = "/x" }),
        'unknown setting "snapshto"')
    contains(init_error({ plan = PLAN, token_sha256 = DIGEST, poll_interval = 5 }), "poll_interval")
    contains(init_error({ plan = PLAN, token_sha256 = DIGEST, dict = "missing" }),
        "lua_shared_dict missing")
    contains(init_error({ plan = { PLAN, 7 }, token_sha256 = DIGEST }), "list of strings")
    contains(init_error({ plan = "{", token_sha256 = DIGEST }), "not valid JSON")
    contains(init_error({ plan = '{"upstreams": {"a": {"balance": "fastest"}}}', token_sha256 = DIGEST }),
        'plan: upstreams."a".balance')
    contains(init_error("x"), "table of settings")
end)

s.case("a missing snapshot file is no error", function()
    local m = endpoints()
    m.init({ plan = PLAN, token_sha256 = DIGEST, snapshot = "/nonexistent/endpoints.json" })
    ok(m.upstream("carts") ~= nil)
end)

s.case("a request finds the worker behind and it catches up before its next tick", function()
    local m = endpoints()
    -- A tick every second: only catch_up can apply the commit within this case.
    m.init({ plan = PLAN, token_sha256 = DIGEST, poll_interval = 1 })
    m.catch_up() -- before init_worker: nothing to do, no error
    m.init_worker()
    eq(m.generation(), 4)
    m.catch_up() -- up to date: one dict get, nothing scheduled
    -- Another worker takes a push: generation 5 moves carts to 10.0.0.2:81.
    local store = require("nginxgen.endpoints.store")
    local peer = {
        host = "10.0.0.2", port = 81, weight = 1, state = "up", backup = false,
        max_fails = 1, fail_timeout = 10,
    }
    ok(store.commit(ngx.shared.nginxgen_endpoints, 5, { carts = { peers = { peer } } }))
    eq(m.generation(), 4, "nothing applied on the request path")
    m.catch_up() -- the same millisecond as the last look: not looked at again
    ngx.sleep(0.002) -- nginx's clock moves on
    eq(m.generation(), 4, "no timer was scheduled within the millisecond")
    m.catch_up()
    m.catch_up() -- a second request while the catch-up is pending schedules nothing more
    ngx.sleep(0.01) -- the request yields: the zero-delay timer runs
    eq(m.generation(), 5)
    eq(m.upstream("carts").pool.all[1].port, 81)
    local reported = ngx.shared.nginxgen_endpoints:get("w|" .. (ngx.worker.id() or 0))
    contains(reported, " 5 ", "the worker reports the generation it caught up to")
end)

return s
