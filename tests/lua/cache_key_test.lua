-- nginxgen.cache.key: which requests may use the cache, and the key they use.

local h = require("harness")
local key = require("nginxgen.cache.key")

local t = h.suite()
local case, eq = t.case, h.eq

local route = { bypass_credentials = true, allow_no_cache = true }

case("GET and HEAD may use the cache, other methods bypass", function()
    eq(key.bypass_reason(route, "GET", {}), nil, "GET")
    eq(key.bypass_reason(route, "HEAD", {}), nil, "HEAD")
    for _, m in ipairs({ "POST", "PUT", "DELETE", "PATCH", "OPTIONS" }) do
        eq(key.bypass_reason(route, m, {}), "method", m)
    end
end)

case("a request with a body bypasses, whatever its method", function()
    eq(key.bypass_reason(route, "GET", { content_length = "5" }), "body", "Content-Length")
    eq(key.bypass_reason(route, "GET", { transfer_encoding = "chunked" }), "body", "chunked")
    eq(key.bypass_reason(route, "HEAD", { content_length = "1" }), "body", "HEAD")
    eq(key.bypass_reason(route, "GET", { content_length = "0" }), nil, "an empty body")
end)

case("credentials bypass unless the route allows them", function()
    eq(key.bypass_reason(route, "GET", { authorization = "Basic eDp5" }), "credentials")
    eq(key.bypass_reason(route, "GET", { cookie = "s=1" }), "credentials")
    local open = { bypass_credentials = false, allow_no_cache = true }
    eq(key.bypass_reason(open, "GET", { cookie = "s=1" }), nil)
end)

case("request no-cache bypasses only when the route allows it", function()
    eq(key.bypass_reason(route, "GET", { cache_control = "max-age=0, No-Cache" }), "no-cache")
    eq(key.bypass_reason(route, "GET", { cache_control = "no-store" }), "no-cache")
    eq(key.bypass_reason(route, "GET", { pragma = "no-cache" }), "no-cache")
    eq(key.bypass_reason(route, "GET", { cache_control = "max-age=0" }), nil, "max-age=0")
    eq(key.bypass_reason(route, "GET", { cache_control = "x-no-cache-please" }), nil,
       "a directive that only contains the word")
    local strict = { bypass_credentials = true, allow_no_cache = false }
    eq(key.bypass_reason(strict, "GET", { cache_control = "no-cache" }), nil)
end)

case("Cache-Control directives parse with values, quotes, case and repeats", function()
    local d = key.directives('Public, MAX-AGE="60" , s-maxage=0, no-cache="Set-Cookie"')
    eq(d.public, true, "public")
    eq(d["max-age"], "60", "max-age")
    eq(d["s-maxage"], "0", "s-maxage")
    eq(d["no-cache"], "Set-Cookie", "no-cache with a field name")
    eq(key.directives({ "max-age=5", "private" }).private, true, "a repeated header")
    eq(next(key.directives(nil)), nil, "no header")
end)

case("query arguments are sorted by name, repeated values keep their order", function()
    eq(key.canonical_args({ b = "2", a = "1" }), "a=1&b=2")
    eq(key.canonical_args({ a = { "2", "1" } }), "a=2&a=1")
    eq(key.canonical_args({ flag = true, x = "a b&c" }), "flag&x=a%20b%26c")
    eq(key.canonical_args({}), "")
end)

case("keys hash method, scheme, host, raw path and sorted args under the prefix", function()
    local k = key.cache_key("p:", "GET", "http", "API.example", "/a/b?z=1&y=2", { z = "1", y = "2" })
    eq(k:sub(1, 2), "p:", "prefix")
    eq(#k, 2 + 32, "md5 length")
    eq(k, key.cache_key("p:", "GET", "http", "api.example", "/a/b?y=2&z=1", { y = "2", z = "1" }),
       "host case and argument order do not split")
    local differs = {
        key.cache_key("p:", "GET", "https", "api.example", "/a/b", { z = "1", y = "2" }),
        key.cache_key("p:", "GET", "http", "other.example", "/a/b", { z = "1", y = "2" }),
        key.cache_key("p:", "GET", "http", "api.example", "/a/B", { z = "1", y = "2" }),
        key.cache_key("p:", "GET", "http", "api.example", "/a/b", { z = "1", y = "3" }),
        key.cache_key("p:", "GET", "http", "api.example", "/a%2Fb", { z = "1", y = "2" }),
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

case("identity and key headers split the key; absent, empty and repeated differ", function()
    local function k(extra)
        return key.cache_key("p:", "GET", "http", "h", "/x", {}, extra)
    end
    eq(k(nil), k({}), "no extra parts keep the key of a plain route")
    local variants = {
        k({ key.part("alice") }),
        k({ key.part("bob") }),
        k({ key.part(nil) }),
        k({ key.part("") }),
        k({ key.part({ "a", "b" }) }),
        k({ key.part("a, b") }),
        k({ key.part("alice"), key.part(nil) }),
        k(nil),
    }
    local seen = {}
    for i, v in ipairs(variants) do
        if seen[v] then
            error("variants " .. seen[v] .. " and " .. i .. " share a key")
        end
        seen[v] = i
    end
    eq(k({ key.part("alice") }), k({ key.part("alice") }), "the same identity, the same key")
    if k({ key.part("secret-token") }):find("secret", 1, true) then
        error("an identity is readable in the key")
    end
end)

return t
