-- Unit tests for nginxgen.endpoints.schema (run inside nginx by test_lua_suites.py).

local t = require("harness")

local s = t.suite()
local eq, ok, fails, contains = t.eq, t.ok, t.fails, t.contains

local function schema()
    t.fresh({ "nginxgen.ip", "nginxgen.endpoints.schema" })
    return require("nginxgen.endpoints.schema")
end

local KNOWN = {
    carts = { balance = "round_robin", max_fails = 3, fail_timeout = 10 },
    users = { balance = "consistent_hash", max_fails = 1, fail_timeout = 5 },
}

local function push(services, extra)
    local doc = { generation = 7, services = services }
    for k, v in pairs(extra or {}) do
        doc[k] = v
    end
    return doc
end

local function peer(fields)
    local p = { host = "10.0.0.1", port = 8080 }
    for k, v in pairs(fields or {}) do
        p[k] = v
    end
    return p
end

s.case("a valid push is normalised with defaults from the upstream", function()
    local m = schema()
    local out = assert(m.push(push({
        carts = { peers = { peer(), peer({ host = "::1", port = 81, weight = 5, backup = true,
            max_fails = 0, fail_timeout = 2.5 }) }, tries = 3 },
    }), KNOWN))
    eq(out.generation, 7)
    local c = out.services.carts
    eq(c.tries, 3)
    eq(#c.peers, 2)
    local a, b = c.peers[1], c.peers[2]
    eq(a.host, "10.0.0.1")
    eq(a.weight, 1)
    eq(a.state, "up")
    eq(a.backup, false)
    eq(a.max_fails, 3, "upstream default")
    eq(a.fail_timeout, 10, "upstream default")
    eq(b.host, "::1")
    eq(b.backup, true)
    eq(b.max_fails, 0)
    eq(b.fail_timeout, 2.5)
end)

s.case("weight 0 is draining; up with weight 0 is a contradiction", function()
    local m = schema()
    local out = assert(m.push(push({ carts = { peers = { peer({ weight = 0 }) } } }), KNOWN))
    eq(out.services.carts.peers[1].state, "draining")
    out = assert(m.push(push({ carts = { peers = { peer({ weight = 4, state = "draining" }) } } }), KNOWN))
    eq(out.services.carts.peers[1].weight, 4)
    local msg, err = fails(function()
        return m.push(push({ carts = { peers = { peer({ weight = 0, state = "up" }) } } }), KNOWN)
    end)
    contains(msg, "weight 0 means draining")
    eq(err.field, "weight")
    eq(err.peer, 0)
end)

s.case("every refusal names the service, the peer and the field", function()
    local m = schema()
    local cases = {
        { peer({ host = "10.0.0.1;server evil" }), "host", "not an IP address literal" },
        { peer({ host = "backend.internal" }), "host", "host names are not accepted" },
        { peer({ host = 10 }), "host", "must be a string" },
        { peer({ port = "8080" }), "port", 'got "8080"' },
        { peer({ port = 0 }), "port", "1-65535" },
        { peer({ port = 65536 }), "port", "1-65535" },
        { peer({ port = 80.5 }), "port", "integer" },
        { peer({ weight = 1001 }), "weight", "0-1000" },
        { peer({ weight = -1 }), "weight", "0-1000" },
        { peer({ weight = true }), "weight", "got true" },
        { peer({ state = "UP" }), "state", '"up", "draining" or "down"' },
        { peer({ backup = "yes" }), "backup", "true or false" },
        { peer({ max_fails = -1 }), "max_fails", "0-1000" },
        { peer({ fail_timeout = -1 }), "fail_timeout", "seconds" },
        { peer({ fail_timeout = "10s" }), "fail_timeout", "seconds" },
        { peer({ color = "red" }), "color", "unknown field" },
    }
    for i, c in ipairs(cases) do
        local other = peer({ host = "10.0.0.9" })
        local msg, err = fails(function()
            return m.push(push({ carts = { peers = { other, c[1] } } }), KNOWN)
        end, "case " .. i)
        eq(err.service, "carts", "case " .. i .. " service")
        eq(err.peer, 1, "case " .. i .. " peer index")
        eq(err.field, c[2], "case " .. i .. " field")
        contains(msg, c[3], "case " .. i)
        contains(msg, 'services."carts".peers[1]', "case " .. i .. " path")
    end
end)

s.case("refused values are shown escaped and short", function()
    local m = schema()
    local msg = fails(function()
        return m.push(push({ carts = { peers = { peer({ host = "1.2.3.4\n\27[31m" .. ("x"):rep(100) }) } } }), KNOWN)
    end)
    ok(not msg:find("\n", 1, true), "no newline in the message")
    ok(not msg:find("\27", 1, true), "no escape byte in the message")
    contains(msg, "\\x0a")
    ok(#msg < 220, "short: " .. #msg)
end)

s.case("unknown services, stale shapes and wrong types are refused", function()
    local m = schema()
    local msg, err = fails(function()
        return m.push(push({ evil = { peers = {} } }), KNOWN)
    end)
    contains(msg, "unknown service")
    eq(err.service, "evil")
    msg = fails(function()
        return m.push({ generation = "7", services = {} }, KNOWN)
    end)
    contains(msg, "generation")
    for _, g in ipairs({ 0, -1, 1.5, 1e15 }) do
        fails(function()
            return m.push({ generation = g, services = {} }, KNOWN)
        end, "generation " .. g)
    end
    msg = fails(function()
        return m.push(push({ carts = { peers = { peer() }, balance = "least_conn" } }), KNOWN)
    end)
    contains(msg, "unknown field")
    msg = fails(function()
        return m.push(push({ carts = { peers = "10.0.0.1:80" } }), KNOWN)
    end)
    contains(msg, "must be a list of peers")
    msg = fails(function()
        return m.push(push({ carts = { peers = { a = peer() } } }), KNOWN)
    end)
    contains(msg, "must be a list of peers")
    msg = fails(function()
        return m.push(push({ carts = { peers = { peer() }, tries = 0 } }), KNOWN)
    end)
    contains(msg, "tries")
    msg = fails(function()
        return m.push(push({}, { extra = 1 }), KNOWN)
    end)
    contains(msg, "unknown field")
    fails(function()
        return m.push({ 1, 2 }, KNOWN)
    end, "an array body")
    fails(function()
        return m.push("x", KNOWN)
    end, "a string body")
end)

s.case("duplicate peers and too many peers are refused", function()
    local m = schema()
    local msg, err = fails(function()
        return m.push(push({ carts = { peers = { peer(), peer({ weight = 3 }) } } }), KNOWN)
    end)
    contains(msg, "twice")
    eq(err.peer, 1)
    msg = fails(function()
        return m.push(push({ carts = { peers = { peer({ host = "::1" }), peer({ host = "0::1" }) } } }), KNOWN)
    end)
    contains(msg, "twice")
    local many = {}
    for i = 1, 11 do
        many[i] = peer({ port = 1000 + i })
    end
    msg = fails(function()
        return m.push(push({ carts = { peers = many } }), KNOWN, { max_peers = 10 })
    end)
    contains(msg, "more than the limit of 10")
end)

s.case("removed empties known services only", function()
    local m = schema()
    local out = assert(m.push(push({}, { removed = { "carts" } }), KNOWN))
    eq(#out.services.carts.peers, 0)
    local msg = fails(function()
        return m.push(push({}, { removed = { "nope" } }), KNOWN)
    end)
    contains(msg, "unknown service")
    msg = fails(function()
        return m.push(push({ carts = { peers = {} } }, { removed = { "carts" } }), KNOWN)
    end)
    contains(msg, "both updated and removed")
end)

s.case("a snapshot skips services the config no longer has", function()
    local m = schema()
    local out = assert(m.snapshot(push({ carts = { peers = { peer() } }, gone = { peers = {} } }), KNOWN))
    eq(#out.skipped, 1)
    eq(out.skipped[1], "gone")
    ok(out.services.carts, "carts kept")
    local msg = fails(function()
        return m.snapshot(push({ carts = { peers = { peer({ port = -1 }) } } }), KNOWN)
    end)
    contains(msg, "port")
end)

s.case("the plan declares upstreams with a balance method and health defaults", function()
    local m = schema()
    local plan = assert(m.plan({
        generation = 0,
        upstreams = { carts = { balance = "least_conn", max_fails = 2 }, users = {} },
        services = { carts = { peers = { peer() } } },
    }))
    eq(plan.upstreams.carts.balance, "least_conn")
    eq(plan.upstreams.carts.max_fails, 2)
    eq(plan.upstreams.carts.fail_timeout, 10, "nginx default")
    eq(plan.upstreams.users.balance, "round_robin")
    eq(plan.upstreams.users.max_fails, 1, "nginx default")
    eq(plan.services.carts.peers[1].max_fails, 2)
    local msg = fails(function()
        return m.plan({ upstreams = { carts = { balance = "hash $request_uri" } } })
    end)
    contains(msg, "consistent_hash")
    msg = fails(function()
        return m.plan({ upstreams = { ["bad name"] = {} } })
    end)
    contains(msg, "not an upstream name")
    msg = fails(function()
        return m.plan({ upstreams = {}, services = { carts = { peers = {} } } })
    end)
    contains(msg, "unknown service")
end)

return s
