-- Proves the harness traps global writes (tests/lua/test_lua_suites.py); not a suite to run.
local t = require("harness").suite()

t.case("leaks", function()
    leaked = true  -- luacheck: ignore
end)

return t
