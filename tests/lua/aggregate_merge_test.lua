-- Unit tests for nginxgen.aggregate.merge: parts' JSON kept byte for byte, top-level
-- fields kept or dropped by name.

local t = require("harness")

local s = t.suite()
local eq = t.eq

local function merge()
    t.fresh({ "nginxgen.aggregate.merge" })
    return require("nginxgen.aggregate.merge")
end

s.case("check accepts JSON as it is and refuses the rest", function()
    local m = merge()
    eq(m.check('{"a": 12345678901234567890, "b": []}'), '{"a": 12345678901234567890, "b": []}')
    eq(m.check("null"), "null")
    eq(m.check("[1, 2]"), "[1, 2]")
    eq(m.check("<html>"), nil)
    eq(m.check(""), nil)
    eq(m.check('{"a": NaN}'), nil)
    eq(m.check('{"a": 0x10}'), nil)
    eq(m.check(string.rep("[", 200) .. string.rep("]", 200)), nil)
end)

s.case("members split an object without touching values", function()
    local m = merge()
    local text = ' { "a" : {"x": "}", "y": [1, {"z": "]"}]}, "b\\u0022q":"s\\"}",'
        .. ' "c": -1.50e3 , "d": true, "e": null, "f": [] } '
    local got = m.members(text)
    eq(#got, 6)
    eq(got[1][1], "a")
    eq(got[1][3], '{"x": "}", "y": [1, {"z": "]"}]}')
    eq(got[2][1], 'b"q')
    eq(got[2][3], '"s\\"}"')
    eq(got[3][3], "-1.50e3")
    eq(got[4][3], "true")
    eq(got[5][3], "null")
    eq(got[6][3], "[]")
    eq(#m.members("{}"), 0)
    eq(m.members("[1]"), nil)
end)

s.case("allow keeps, deny drops, by decoded name", function()
    local m = merge()
    local text = '{"id": 1, "t\\u0069tle": "T", "secret": {"k": 1}, "id": 2}'
    eq(m.filter(text, { "id", "title" }), '{"id":1,"t\\u0069tle":"T","id":2}')
    eq(m.filter(text, nil, { "secret" }), '{"id":1,"t\\u0069tle":"T","id":2}')
    eq(m.filter(text, { "nothing" }), "{}")
    eq(m.filter(text), text)
    local none, why = m.filter("[1, 2]", { "id" })
    eq(none, nil)
    eq(why, "not a JSON object")
end)

s.case("object puts parts in order, null for the failed", function()
    local m = merge()
    eq(m.object({ "user", "cart" }, { '{"a":1}' }), '{"user":{"a":1},"cart":null}')
    eq(m.object({ 'q"x' }, { "[]" }), '{"q\\"x":[]}')
end)

return s
