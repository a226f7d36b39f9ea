-- Unit tests for nginxgen.aggregate.path (run inside nginx by test_lua_suites.py): a
-- template value is one path segment, percent-encoded, or refused.

local t = require("harness")

local s = t.suite()
local eq, ok = t.eq, t.ok

local function path()
    t.fresh({ "nginxgen.aggregate.path" })
    return require("nginxgen.aggregate.path")
end

s.case("unreserved characters pass, every other byte is %XX", function()
    local p = path()
    eq(p.encode("abc-XYZ_0.9~"), "abc-XYZ_0.9~")
    eq(p.encode("a b"), "a%20b")
    eq(p.encode("a?b#c"), "a%3Fb%23c")
    eq(p.encode("%2F"), "%252F")
    eq(p.encode("é"), "%C3%A9")
    eq(p.encode("a;b\r\nc"), "a%3Bb%0D%0Ac")
    eq(p.encode("\0"), "%00")
end)

s.case("separators, dot segments, empty and long values are refused", function()
    local p = path()
    for _, v in ipairs({ "/", "a/b", "..", ".", "\\", "a\\b", "" }) do
        local encoded, why = p.encode(v)
        eq(encoded, nil, v)
        ok(type(why) == "string", v)
    end
    eq(p.encode(nil), nil)
    eq(p.encode(string.rep("a", p.MAX_VALUE)), string.rep("a", p.MAX_VALUE))
    eq(p.encode(string.rep("a", p.MAX_VALUE + 1)), nil)
    eq(p.encode("..."), "...")  -- three dots are a name, not a dot segment
end)

-- Many random byte strings: what comes out is one segment of URL-safe text that decodes
-- to exactly the input (ngx.unescape_uri, nginx's own decoder).
s.case("any bytes come out as one segment that decodes back", function()
    local p = path()
    math.randomseed(20261202)
    local alphabet = { "/", "\\", ".", "%", "?", "#", ";", " ", "\0", "\r", "\n", "a", "Z", "~" }
    for _ = 1, 5000 do
        local n = math.random(1, 24)
        local bytes = {}
        for i = 1, n do
            if math.random() < 0.5 then
                bytes[i] = alphabet[math.random(#alphabet)]
            else
                bytes[i] = string.char(math.random(0, 255))
            end
        end
        local value = table.concat(bytes)
        local encoded = p.encode(value)
        local unsafe = value == "." or value == ".." or value:find("[/\\]")
        if unsafe then
            eq(encoded, nil, value)
        else
            ok(encoded:find("^[A-Za-z0-9%-._~%%]+$") ~= nil, encoded)
            ok(encoded ~= "." and encoded ~= "..", encoded)
            eq(ngx.unescape_uri(encoded), value, encoded)
        end
    end
end)

s.case("expand fills each placeholder or names the one it could not", function()
    local p = path()
    local pieces = {
        { text = "/carts/" }, { var = "cookie_session", source = "cookie.session" },
        { text = "/items?v=2" },
    }
    local values = { cookie_session = "a b" }
    local function lookup(piece)
        return values[piece.var]
    end
    eq(p.expand(pieces, lookup), "/carts/a%20b/items?v=2")
    values.cookie_session = "../admin"
    local uri, source, why = p.expand(pieces, lookup)
    eq(uri, nil)
    eq(source, "cookie.session")
    eq(why, "holds a path separator")
end)

s.case("segment counts from one and skips nothing", function()
    local p = path()
    eq(p.segment("/bff/item/42", 3), "42")
    eq(p.segment("/bff/item/42", 1), "bff")
    eq(p.segment("/bff/item/42", 4), nil)
    eq(p.segment(nil, 1), nil)
end)

return s
