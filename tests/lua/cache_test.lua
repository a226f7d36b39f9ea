-- Unit tests for the pure parts of nginxgen.cache, run inside nginx by test_cache_lua.py.
-- Each case is a function; run() prints "ok <n>" or one "FAIL <case>: <why>" line per failure.

local cache = require("nginxgen.cache")

local _M = {}

local cases = {}
local function case(name, fn)
    cases[#cases + 1] = { name, fn }
end

local function eq(got, want, what)
    if got ~= want then
        error((what or "value") .. ": got " .. tostring(got) .. ", want " .. tostring(want), 2)
    end
end

local route = {
    bypass_credentials = true,
    allow_no_cache = true,
    max_body = 100,
    status_set = { [200] = true, [301] = true },
}

case("GET and HEAD may use the cache, other methods bypass", function()
    eq(cache.bypass_reason(route, "GET", {}), nil, "GET")
    eq(cache.bypass_reason(route, "HEAD", {}), nil, "HEAD")
    for _, m in ipairs({ "POST", "PUT", "DELETE", "PATCH", "OPTIONS" }) do
        eq(cache.bypass_reason(route, m, {}), "method", m)
    end
end)

case("credentials bypass unless the route allows them", function()
    eq(cache.bypass_reason(route, "GET", { authorization = "Basic eDp5" }), "credentials")
    eq(cache.bypass_reason(route, "GET", { cookie = "s=1" }), "credentials")
    local open = { bypass_credentials = false, allow_no_cache = true }
    eq(cache.bypass_reason(open, "GET", { cookie = "s=1" }), nil)
end)

case("request no-cache bypasses only when the route allows it", function()
    eq(cache.bypass_reason(route, "GET", { cache_control = "max-age=0, No-Cache" }), "no-cache")
    eq(cache.bypass_reason(route, "GET", { cache_control = "no-store" }), "no-cache")
    eq(cache.bypass_reason(route, "GET", { pragma = "no-cache" }), "no-cache")
    eq(cache.bypass_reason(route, "GET", { cache_control = "max-age=0" }), nil, "max-age=0")
    local strict = { bypass_credentials = true, allow_no_cache = false }
    eq(cache.bypass_reason(strict, "GET", { cache_control = "no-cache" }), nil)
end)

case("query arguments are sorted by name, repeated values keep their order", function()
    eq(cache.canonical_args({ b = "2", a = "1" }), "a=1&b=2")
    eq(cache.canonical_args({ a = { "2", "1" } }), "a=2&a=1")
    eq(cache.canonical_args({ flag = true, x = "a b&c" }), "flag&x=a%20b%26c")
    eq(cache.canonical_args({}), "")
end)

case("keys hash method, scheme, host, raw path and sorted args under the prefix", function()
    local k = cache.cache_key("p:", "GET", "http", "API.example", "/a/b?z=1&y=2", { z = "1", y = "2" })
    eq(k:sub(1, 2), "p:", "prefix")
    eq(#k, 2 + 32, "md5 length")
    eq(k, cache.cache_key("p:", "GET", "http", "api.example", "/a/b?y=2&z=1", { y = "2", z = "1" }),
       "host case and argument order do not split")
    local differs = {
        cache.cache_key("p:", "GET", "https", "api.example", "/a/b", { z = "1", y = "2" }),
        cache.cache_key("p:", "GET", "http", "other.example", "/a/b", { z = "1", y = "2" }),
        cache.cache_key("p:", "GET", "http", "api.example", "/a/B", { z = "1", y = "2" }),
        cache.cache_key("p:", "GET", "http", "api.example", "/a/b", { z = "1", y = "3" }),
        cache.cache_key("p:", "GET", "http", "api.example", "/a%2Fb", { z = "1", y = "2" }),
    }
    for i, other in ipairs(differs) do
        if other == k then
            error("variant " .. i .. " shares the key")
        end
    end
    if k:find("a/b", 1, true) then
        error("the path is readable in the key")
    end
end)

case("only configured statuses without private markers are storable", function()
    eq(cache.storable(route, 200, {}), true)
    eq(cache.storable(route, 301, {}), true)
    eq(select(2, cache.storable(route, 404, {})), "status")
    eq(select(2, cache.storable(route, 200, { set_cookie = "a=1" })), "set-cookie")
    eq(select(2, cache.storable(route, 200, { set_cookie = { "a=1", "b=2" } })), "set-cookie")
    eq(select(2, cache.storable(route, 200, { cache_control = "Private" })), "cache-control")
    eq(select(2, cache.storable(route, 200, { cache_control = { "max-age=5", "no-store" } })),
       "cache-control")
    eq(cache.storable(route, 200, { cache_control = "public, max-age=60" }), true)
    eq(select(2, cache.storable(route, 200, { content_length = "101" })), "too-large")
    eq(cache.storable(route, 200, { content_length = "100" }), true)
    eq(select(2, cache.storable(route, 200, { content_encoding = "gzip" })), "content-encoding")
    eq(cache.storable(route, 200, { vary = "Accept-Encoding" }), true)
    eq(select(2, cache.storable(route, 200, { vary = "Accept-Encoding, Cookie" })), "vary")
    eq(select(2, cache.storable(route, 200, { vary = "*" })), "vary")
end)

case("entries round-trip status, headers and any body bytes", function()
    local body = "line1\n\nline3\0binary\255"
    local value = cache.encode(200, { { "Content-Type", "text/plain" }, { "ETag", '"x"' },
                                      { "Link", "a" }, { "Link", "b" } }, body, 1234.9)
    local e = cache.decode(value)
    eq(e.status, 200, "status")
    eq(e.stored_at, 1234, "stored_at")
    eq(e.body, body, "body")
    eq(#e.headers, 4, "headers")
    eq(e.headers[2][1], "ETag")
    eq(e.headers[2][2], '"x"')
    eq(e.headers[4][2], "b")
    local empty = cache.decode(cache.encode(204, {}, "", 1))
    eq(empty.body, "", "empty body")
end)

case("header values cannot inject lines into an entry", function()
    local e = cache.decode(cache.encode(200, { { "X-A", "v\r\nX-B: evil" } }, "b", 1))
    eq(#e.headers, 1, "headers")
    eq(e.headers[1][2], "v  X-B: evil")
end)

case("foreign or damaged values are misses, not errors", function()
    eq(cache.decode("hello"), nil, "no header block")
    eq(cache.decode("OTHER 200 1\n\nbody"), nil, "other format")
    eq(cache.decode("NGXC1 abc 1\n\nbody"), nil, "bad status")
end)

function _M.run()
    local failed = 0
    for _, c in ipairs(cases) do
        local ok, err = pcall(c[2])
        if not ok then
            failed = failed + 1
            ngx.say("FAIL ", c[1], ": ", err)
        end
    end
    if failed == 0 then
        ngx.say("ok ", #cases, " redis client: ", cache.redis_flavor)
    end
end

return _M
