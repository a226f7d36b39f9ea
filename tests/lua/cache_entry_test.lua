-- nginxgen.cache.entry: which answers are stored, for how long, and their stored form.

local h = require("harness")
local entry = require("nginxgen.cache.entry")

local t = h.suite()
local case, eq = t.case, h.eq

local NOW = 1700000000
local route = {
    ttl = 30000,
    max_body = 100,
    status_set = { [200] = true, [301] = true },
}

local function why(...)
    return select(2, entry.storable(...))
end

case("only configured statuses without private markers are stored, for the ttl", function()
    eq(entry.storable(route, 200, {}, NOW), 30000)
    eq(entry.storable(route, 301, {}, NOW), 30000)
    eq(why(route, 404, {}, NOW), "status")
    eq(why(route, 200, { set_cookie = "a=1" }, NOW), "set-cookie")
    eq(why(route, 200, { set_cookie = { "a=1", "b=2" } }, NOW), "set-cookie")
    eq(why(route, 200, { cache_control = "Private" }, NOW), "cache-control")
    eq(why(route, 200, { cache_control = { "max-age=5", "no-store" } }, NOW), "cache-control")
    eq(why(route, 200, { cache_control = "no-cache" }, NOW), "cache-control")
    eq(why(route, 200, { cache_control = 'no-cache="Set-Cookie"' }, NOW), "cache-control")
    eq(entry.storable(route, 200, { cache_control = "public" }, NOW), 30000)
    eq(why(route, 200, { content_length = "101" }, NOW), "too-large")
    eq(entry.storable(route, 200, { content_length = "100" }, NOW), 30000)
    eq(why(route, 200, { content_encoding = "gzip" }, NOW), "content-encoding")
    eq(entry.storable(route, 200, { vary = "Accept-Encoding" }, NOW), 30000)
    eq(why(route, 200, { vary = "Accept-Encoding, Cookie" }, NOW), "vary")
    eq(why(route, 200, { vary = "*" }, NOW), "vary")
end)

case("the upstream's zero lifetimes are not stored", function()
    eq(why(route, 200, { cache_control = "max-age=0" }, NOW), "stale")
    eq(why(route, 200, { cache_control = "public, s-maxage=0" }, NOW), "stale")
    eq(why(route, 200, { cache_control = "s-maxage=0, max-age=60" }, NOW), "stale",
       "s-maxage rules a shared cache")
    eq(why(route, 200, { cache_control = "max-age=soon" }, NOW), "stale", "unparsable")
    eq(why(route, 200, { expires = "0" }, NOW), "stale", "Expires: 0")
    eq(why(route, 200, { expires = ngx.http_time(NOW - 1) }, NOW), "stale", "a past Expires")
end)

case("a shorter upstream lifetime shortens the ttl, a longer one does not lengthen it", function()
    eq(entry.storable(route, 200, { cache_control = "max-age=5" }, NOW), 5000)
    eq(entry.storable(route, 200, { cache_control = "max-age=0, s-maxage=7" }, NOW), 7000)
    eq(entry.storable(route, 200, { cache_control = "max-age=3600" }, NOW), 30000)
    eq(entry.storable(route, 200, { expires = ngx.http_time(NOW + 10) }, NOW), 10000)
    eq(entry.storable(route, 200, { cache_control = "max-age=5",
                                    expires = ngx.http_time(NOW - 1) }, NOW), 5000,
       "max-age beats Expires")
end)

case("every response header is stored except hop-by-hop ones and per-answer ones", function()
    local stored = entry.stored_headers({
        ["Content-Type"] = "text/html",
        ["X-Content-Type-Options"] = "nosniff",
        ["Content-Security-Policy"] = "default-src 'self'",
        ["Access-Control-Allow-Origin"] = "https://app.example",
        ["Link"] = { "<a>; rel=preload", "<b>; rel=preload" },
        ["Connection"] = "close", ["Keep-Alive"] = "timeout=5", ["Transfer-Encoding"] = "chunked",
        ["Upgrade"] = "h2c", ["Trailer"] = "X-T", ["TE"] = "trailers",
        ["Proxy-Authenticate"] = "Basic", ["Set-Cookie"] = "s=1", ["Content-Length"] = "5",
        ["Age"] = "9", ["X-Cache"] = "MISS", ["Date"] = "x", ["Server"] = "x",
        ["X-Request-ID"] = "r1",
    })
    local names = {}
    for _, pair in ipairs(stored) do
        names[#names + 1] = pair[1] .. "=" .. pair[2]
    end
    eq(table.concat(names, "|"), table.concat({
        "Access-Control-Allow-Origin=https://app.example",
        "Content-Security-Policy=default-src 'self'",
        "Content-Type=text/html",
        "Link=<a>; rel=preload",
        "Link=<b>; rel=preload",
        "X-Content-Type-Options=nosniff",
    }, "|"))
end)

case("entries round-trip status, headers, times and any body bytes", function()
    local body = "line1\n\nline3\0binary\255"
    local value = entry.encode(200, { { "Content-Type", "text/plain" }, { "ETag", '"x"' },
                                      { "Link", "a" }, { "Link", "b" } }, body,
                               1234.5678, 1264.5678)
    local e = entry.decode(value)
    eq(e.status, 200, "status")
    eq(e.stored_at, 1234.567, "stored_at")
    eq(e.expires_at, 1264.567, "expires_at")
    eq(e.body, body, "body")
    eq(#e.headers, 4, "headers")
    eq(e.headers[2][1], "ETag")
    eq(e.headers[2][2], '"x"')
    eq(e.headers[4][2], "b")
    local empty = entry.decode(entry.encode(204, {}, "", 1, 2))
    eq(empty.body, "", "empty body")
end)

case("header values cannot inject lines into an entry", function()
    local e = entry.decode(entry.encode(200, { { "X-A", "v\r\nX-B: evil" } }, "b", 1, 2))
    eq(#e.headers, 1, "headers")
    eq(e.headers[1][2], "v  X-B: evil")
end)

case("foreign, older or damaged values are misses, not errors", function()
    eq(entry.decode("hello"), nil, "no header block")
    eq(entry.decode("OTHER 200 1 2\n\nbody"), nil, "other format")
    eq(entry.decode("NGXC1 200 1\nContent-Type: a\n\nbody"), nil, "the previous layout")
    eq(entry.decode(entry.FORMAT .. " abc 1 2\n\nbody"), nil, "bad status")
end)

return t
