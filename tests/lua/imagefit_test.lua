-- Unit tests for nginxgen.imagefit's width choice: only listed widths, the nearest one.

local t = require("harness")

local s = t.suite()
local eq = t.eq

local function fit()
    t.fresh({ "nginxgen.imagefit" })
    return require("nginxgen.imagefit")
end

s.case("the nearest allowed width, a tie to the larger", function()
    local f = fit()
    local widths = { 320, 640, 1280 }
    eq(f.pick(widths, "640"), 640)
    eq(f.pick(widths, "641"), 640)
    eq(f.pick(widths, "960"), 1280)
    eq(f.pick(widths, "959"), 640)
    eq(f.pick(widths, "1"), 320)
    eq(f.pick(widths, "99999999"), 1280)
    eq(f.pick(widths, "412.5"), 320)
end)

s.case("anything but a plain number picks nothing", function()
    local f = fit()
    local widths = { 320, 640 }
    for _, v in ipairs({ "", "-5", "0", "abc", "1e9", "640px", " 640", "0x280", "inf",
                         "nan", "1234567890123", "640,320" }) do
        eq(f.pick(widths, v), nil, v)
    end
    eq(f.pick(widths, nil), nil)
end)

return s
