-- Unit tests for nginxgen.ip (run inside nginx by test_lua_suites.py).

local t = require("harness")

local s = t.suite()
local eq = t.eq

local function ip()
    t.fresh({ "nginxgen.ip" })
    return require("nginxgen.ip")
end

s.case("IPv4 literals pass as written", function()
    local m = ip()
    for _, a in ipairs({ "10.0.0.1", "127.0.0.1", "255.255.255.255", "1.2.3.4", "0.0.0.1" }) do
        local canon, family = m.parse(a)
        eq(canon, a, a)
        eq(family, 4, a)
    end
end)

s.case("IPv6 literals come out in RFC 5952 form", function()
    local m = ip()
    local cases = {
        ["::1"] = "::1",
        ["0:0:0:0:0:0:0:1"] = "::1",
        ["FE80::0001"] = "fe80::1",
        ["2001:db8:0:0:1:0:0:1"] = "2001:db8::1:0:0:1",
        ["2001:0db8:0000:0000:0000:ff00:0042:8329"] = "2001:db8::ff00:42:8329",
        ["1:0:0:0:0:0:0:0"] = "1::",
        ["1:2:3:4:5:6:7:8"] = "1:2:3:4:5:6:7:8",
        ["1:2:3:4:5:6:7::"] = "1:2:3:4:5:6:7:0",
        ["1:0:1:0:1:0:1:0"] = "1:0:1:0:1:0:1:0",
        ["::ffff:10.0.0.1"] = "::ffff:a00:1",
        ["fd00::2"] = "fd00::2",
    }
    for input, want in pairs(cases) do
        local canon, family = m.parse(input)
        eq(canon, want, input)
        eq(family, 6, input)
    end
end)

s.case("names, ports, zones, injected text and odd spellings are refused", function()
    local m = ip()
    local bad = {
        "example.com", "localhost", "10.0.0.1:80", "10.0.0.1 ", " 10.0.0.1", "10.0.0.1;",
        "10.0.0.1\n", "10.0.0.1;server evil", "10.0.0.256", "10.0.0", "10.0.0.1.2", "010.0.0.1",
        "1.2.3.04", "[::1]", "fe80::1%eth0", "1::2::3", "1:2:3:4:5:6:7:8:9", "12345::1",
        ":1", "1:", "::g", "", "0.0.0.0", "::", "0:0::0", "10.0.0.1\0", "１.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
    }
    for _, a in ipairs(bad) do
        local canon, why = m.parse(a)
        eq(canon, nil, a)
        t.ok(type(why) == "string" and #why > 0, "a reason for " .. a)
    end
    eq(m.parse(80), nil, "a number")
    eq(m.parse(nil), nil, "nil")
end)

s.case("an embedded IPv4 tail is only allowed at the end", function()
    local m = ip()
    eq(m.parse("::1.2.3.4"), "::102:304")
    eq(m.parse("1.2.3.4::"), nil)
    eq(m.parse("1:2:3:4:5:6:1.2.3.4"), "1:2:3:4:5:6:102:304")
end)

return s
