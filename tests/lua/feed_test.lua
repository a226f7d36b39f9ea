-- Unit tests for nginxgen.endpoints.feed (run inside nginx by test_lua_suites.py).
-- Several Feeds on one fake dict stand for the master and the workers.

local t = require("harness")

local s = t.suite()
local eq, ok, contains = t.eq, t.ok, t.contains

local MODULES = {
    "nginxgen.ip", "nginxgen.endpoints.json", "nginxgen.endpoints.schema",
    "nginxgen.endpoints.store", "nginxgen.balancer.pool", "nginxgen.balancer.health",
    "nginxgen.endpoints.journal", "nginxgen.endpoints.feed",
}

local function load()
    t.fresh(MODULES)
    return require("nginxgen.endpoints.feed"), require("nginxgen.endpoints.schema"),
        require("nginxgen.endpoints.json"), require("nginxgen.endpoints.store")
end

local function peers(...)
    local out = {}
    for i, port in ipairs({ ... }) do
        out[i] = { host = "10.0.0.1", port = port }
    end
    return out
end

local function setup(plan_services, plan_gen, clock)
    local feed, schema, json, store = load()
    clock = clock or t.clock()
    local function plan_of(services, gen)
        return assert(schema.plan({
            generation = gen or 0,
            upstreams = { carts = { max_fails = 2 }, users = { balance = "least_conn" } },
            services = services or {},
        }))
    end
    local plan = plan_of(plan_services, plan_gen)
    local dict, hdict = t.fake_dict(clock), t.fake_dict(clock)
    local logged = {}
    local function new(other_plan)
        return feed.new({
            plan = other_plan or plan, dict = dict, health_dict = hdict, max_peers = 50,
            sleep = function() end,
            log = function(level, ...)
                logged[#logged + 1] = level .. ": " .. table.concat({ ... })
            end,
        })
    end
    return {
        new = new, plan_of = plan_of, dict = dict, json = json, store = store, logged = logged,
        clock = clock,
    }
end

local function ports(up)
    local out = {}
    for i, p in ipairs(up.pool.all) do
        out[i] = p.port
    end
    return table.concat(out, ",")
end

local function dump(dict)
    local out = {}
    for _, k in ipairs(dict:get_keys(0)) do
        out[#out + 1] = k .. "=" .. tostring(dict:get(k))
    end
    return table.concat(out, "\n")
end

s.case("the plan seeds an empty dict and every worker serves it", function()
    local env = setup({ carts = { peers = peers(81, 82) } }, 3)
    local master = env.new()
    contains(master:seed(nil), "generation 3")
    local w = env.new()
    w:resync()
    eq(w.generation, 3)
    eq(ports(w.upstreams.carts), "81,82")
    eq(w.upstreams.carts.pool.all[1].max_fails, 2, "upstream default")
    eq(ports(w.upstreams.users), "", "no endpoints yet")
end)

s.case("the newest source wins per service: snapshot over an older plan", function()
    local env = setup({ carts = { peers = peers(81) }, users = { peers = peers(91) } }, 3)
    local snap = env.json.encode({ generation = 8, services = { carts = { peers = peers(85) } } })
    env.new():seed(snap, "snap.json")
    local w = env.new()
    w:resync()
    eq(w.generation, 8)
    eq(ports(w.upstreams.carts), "85", "from the snapshot")
    eq(ports(w.upstreams.users), "91", "the snapshot lacks it: from the plan")
end)

s.case("a plan rendered after the snapshot wins over it", function()
    local env = setup({ carts = { peers = peers(81) } }, 12)
    local snap = env.json.encode({ generation = 8, services = { carts = { peers = peers(85) } } })
    env.new():seed(snap, "snap.json")
    local w = env.new()
    w:resync()
    eq(w.generation, 12)
    eq(ports(w.upstreams.carts), "81")
end)

s.case("after a reload the dict's newer pushes stay; new services come from the plan", function()
    local env = setup({ carts = { peers = peers(81) } }, 3)
    local master = env.new()
    master:seed(nil)
    eq((master:push(env.json.encode({ generation = 20, services = { carts = { peers = peers(99) } } }))), 200)
    -- reload: a new master Feed with a plan from before the push, and a new service
    local reloaded = env.new(env.plan_of({ carts = { peers = peers(81) }, users = { peers = peers(71) } }, 3))
    local snap = env.json.encode({ generation = 10, services = { carts = { peers = peers(85) } } })
    reloaded:seed(snap, "snap.json")
    local w = env.new()
    w:resync()
    eq(w.generation, 20, "never an older generation")
    eq(ports(w.upstreams.carts), "99", "the pushed peers")
    eq(ports(w.upstreams.users), "71", "written at the same generation")
end)

s.case("the seed forgets services the config no longer has", function()
    local env = setup({}, 1)
    env.store.commit(env.dict, 5, { gone = { peers = {} } })
    env.new():seed(nil)
    eq(env.store.read(env.dict, "gone"), nil)
end)

s.case("a broken snapshot is ignored with a clear log line", function()
    local env = setup({ carts = { peers = peers(81) } }, 3)
    env.new():seed('{"generation": 9, "services": {"carts": {"peers": [{"host": "evil", "port": 1}]}}}',
        "/etc/nginx/endpoints.json")
    local w = env.new()
    w:resync()
    eq(ports(w.upstreams.carts), "81")
    contains(env.logged[1], "ignoring the boot snapshot /etc/nginx/endpoints.json")
    contains(env.logged[1], "host")
    env.new():seed("{not json", "x")
    contains(env.logged[2], "not valid JSON")
end)

-- The journal next to the snapshot, as deploy/journal.py writes it.
local function journal_of(base, ...)
    local out = { "nginxgen-endpoints-journal 1 base=" .. base .. "\n" }
    for _, payload in ipairs({ ... }) do
        out[#out + 1] = string.format("%d %08x\n", #payload, ngx.crc32_long(payload)) .. payload .. "\n"
    end
    return table.concat(out)
end

local function record(json, gen, services)
    return json.encode({ generation = gen, services = services })
end

s.case("the journal's records apply over the snapshot, in order", function()
    local env = setup({ carts = { peers = peers(81) }, users = { peers = peers(91) } }, 3)
    local snap = record(env.json, 8, { carts = { peers = peers(85) }, users = { peers = peers(95) } })
    local j = journal_of(8,
        record(env.json, 9, { carts = { peers = peers(86) } }),
        record(env.json, 10, { users = { peers = peers(96) } }),
        record(env.json, 11, { carts = { peers = peers(87) } }))
    contains(env.new():seed(snap, "snap.json", j), "generation 11")
    local w = env.new()
    w:resync()
    eq(w.generation, 11)
    eq(ports(w.upstreams.carts), "87", "the last record of carts")
    eq(ports(w.upstreams.users), "96")
    contains(table.concat(env.logged, "\n"), "3 record(s) applied, up to generation 11")
end)

s.case("a torn last record is ignored: the last whole one serves", function()
    local env = setup({ carts = { peers = peers(81) } }, 3)
    local snap = record(env.json, 8, { carts = { peers = peers(85) } })
    local j = journal_of(8, record(env.json, 9, { carts = { peers = peers(86) } }),
        record(env.json, 10, { carts = { peers = peers(87) } }))
    env.new():seed(snap, "snap.json", j:sub(1, #j - 7))
    local w = env.new()
    w:resync()
    eq(w.generation, 9)
    eq(ports(w.upstreams.carts), "86")
    contains(env.logged[1], "warn: nginxgen endpoints: the boot snapshot's journal snap.json.journal")
    contains(env.logged[1], "a record cut short")
end)

s.case("a journal of another snapshot is ignored", function()
    local env = setup({ carts = { peers = peers(81) } }, 3)
    local snap = record(env.json, 20, { carts = { peers = peers(85) } })
    env.new():seed(snap, "snap.json", journal_of(8, record(env.json, 30, { carts = { peers = peers(86) } })))
    local w = env.new()
    w:resync()
    eq(w.generation, 20)
    eq(ports(w.upstreams.carts), "85")
    contains(env.logged[1], "continues generation 8, not the snapshot's 20; ignored")
end)

s.case("unknown services are skipped; a bad record ends the replay, never a failed start", function()
    local env = setup({ carts = { peers = peers(81) }, users = { peers = peers(91) } }, 3)
    local snap = record(env.json, 8, { carts = { peers = peers(85) } })
    local j = journal_of(8,
        record(env.json, 9, { gone = { peers = peers(1) }, users = { peers = peers(96) } }),
        record(env.json, 10, { carts = { peers = { { host = "evil", port = 1 } } } }),
        record(env.json, 12, { carts = { peers = peers(88) } }))
    contains(env.new():seed(snap, "snap.json", j), "generation 9")
    local w = env.new()
    w:resync()
    eq(ports(w.upstreams.carts), "85", "not record 3: it came after the refused one")
    eq(ports(w.upstreams.users), "96", "the known service of a record naming a gone one")
    local log = table.concat(env.logged, "\n")
    contains(log, "record 2 refused: ")
    contains(log, "it and the 1 record(s) after it are ignored")
    contains(log, "names 1 service(s) this config does not have; skipped")
    contains(log, "1 record(s) applied, up to generation 9")
    for _, bad in ipairs({ "{not json", record(env.json, 9, { carts = { peers = peers(99) } }) }) do
        local e = setup({ carts = { peers = peers(81) } }, 3)
        local jj = journal_of(8, record(e.json, 9, { carts = { peers = peers(86) } }), bad,
            record(e.json, 11, { carts = { peers = peers(87) } }))
        contains(e.new():seed(snap, "snap.json", jj), "generation 9")
        contains(table.concat(e.logged, "\n"), "record 2 refused: ")
    end
    local other = setup({ carts = { peers = peers(81) } }, 3)
    other.new():seed(snap, "snap.json", "garbage")
    contains(other.logged[1], "error: nginxgen endpoints: the boot snapshot's journal snap.json.journal is ignored")
end)

s.case("without a usable snapshot the journal is not read", function()
    local env = setup({ carts = { peers = peers(81) } }, 3)
    env.new():seed("{not json", "snap.json", journal_of(8, record(env.json, 9, { carts = { peers = peers(86) } })))
    local w = env.new()
    w:resync()
    eq(ports(w.upstreams.carts), "81", "the plan")
end)

s.case("a push writes only its services; workers rebuild only those", function()
    local env = setup({ carts = { peers = peers(81) }, users = { peers = peers(91) } }, 1)
    env.new():seed(nil)
    local w = env.new()
    w:resync()
    local users_pool = w.upstreams.users.pool
    local master = env.new()
    local status, answer = master:push(env.json.encode({
        generation = 2, services = { carts = { peers = peers(81, 83), tries = 2 } },
    }))
    eq(status, 200)
    eq(answer.generation, 2)
    eq(answer.services, 1)
    eq(ports(master.upstreams.carts), "81,83", "the pushing worker serves it at once")
    eq(w:sync(), 1, "one service rebuilt")
    eq(w.generation, 2)
    eq(ports(w.upstreams.carts), "81,83")
    eq(w.upstreams.carts.pool.tries, 2)
    ok(w.upstreams.users.pool == users_pool, "users untouched")
    eq(w:sync(), 0, "nothing new")
end)

s.case("refused pushes change nothing and say why", function()
    local env = setup({ carts = { peers = peers(81) } }, 5)
    local master = env.new()
    master:seed(nil)
    local before = dump(env.dict)
    local cases = {
        { { generation = 5, services = {} }, 409, "not newer than the current generation 5" },
        { { generation = 4, services = { carts = { peers = peers(82) } } }, 409, "not newer" },
        { { generation = 6, services = { evil = { peers = {} } } }, 400, "unknown service" },
        { { generation = 6, services = { carts = { peers = { { host = "1.2.3.4 weight=9", port = 1 } } } } },
            400, "host" },
        { { generation = 6, services = { carts = { peers = peers(81), users = 1 } } }, 400, "unknown field" },
    }
    for i, c in ipairs(cases) do
        local status, answer = master:push(env.json.encode(c[1]))
        eq(status, c[2], "case " .. i)
        contains(answer.error, c[3], "case " .. i)
        eq(dump(env.dict), before, "case " .. i .. " changed the dict")
    end
    local status, answer = master:push("{\"generation\": 6, ")
    eq(status, 400)
    contains(answer.error, "not valid JSON")
    status = master:push('{"generation": 6, "services": {"carts": {"peers": [' .. ("["):rep(40) .. "]}}}")
    eq(status, 400, "deep nesting")
    eq(dump(env.dict), before)
end)

s.case("a push that does not fit in the dict is refused whole", function()
    local clock = t.clock()
    local env = setup({ carts = { peers = peers(81) } }, 1, clock)
    -- a small dict: rebuild the setup with a memory limit
    local feed = require("nginxgen.endpoints.feed")
    local schema = require("nginxgen.endpoints.schema")
    local plan = assert(schema.plan({ upstreams = { carts = {}, users = {} } }))
    local dict = t.fake_dict(clock, 4000)
    local f = feed.new({ plan = plan, dict = dict, health_dict = t.fake_dict(clock), max_peers = 1000,
        sleep = function() end, log = function() end })
    f:seed(nil)
    assert(f:push(env.json.encode({ generation = 2, services = { carts = { peers = peers(81) } } })) == 200)
    local before = dump(dict)
    local many = {}
    for i = 1, 200 do
        many[i] = { host = "10.1.0." .. (i % 250 + 1), port = 1000 + i }
    end
    local status, answer = f:push(env.json.encode({
        generation = 3, services = { carts = { peers = peers(82) }, users = { peers = many } },
    }))
    eq(status, 507)
    contains(answer.error, "nothing changed")
    eq(dump(dict), before)
end)

s.case("a worker that fell behind the change log reads everything again", function()
    local env = setup({ carts = { peers = peers(81) } }, 1)
    local master = env.new()
    master:seed(nil)
    local w = env.new()
    w:resync()
    for g = 2, env.store.LOG_KEEP + 5 do
        assert(master:push(env.json.encode({ generation = g, services = { carts = { peers = peers(g) } } })) == 200)
    end
    eq(w:sync(), -1, "resync")
    eq(w.generation, env.store.LOG_KEEP + 5)
    eq(ports(w.upstreams.carts), tostring(env.store.LOG_KEEP + 5))
end)

s.case("status converges when every worker reports the last commit", function()
    local env = setup({ carts = { peers = peers(81) } }, 1)
    local master = env.new()
    master:seed(nil)
    local w0, w1 = env.new(), env.new()
    w0:resync()
    w1:resync()
    w0:heartbeat(0, 100)
    local st = master:status(2)
    eq(st.converged, false, "worker 1 has not reported")
    w1:heartbeat(1, 101)
    st = master:status(2)
    eq(st.converged, true)
    eq(st.generation, 1)
    master:push(env.json.encode({ generation = 7, services = { carts = { peers = peers(82) } } }))
    eq(master:status(2).converged, false, "reports are of the old generation")
    w0:sync()
    w0:heartbeat(0, 100)
    w1:sync()
    w1:heartbeat(1, 101)
    st = master:status(2)
    eq(st.converged, true)
    eq(st.workers[2].generation, 7)
    eq(st.workers[2].pid, 101)
end)

s.case("a service's view carries health and active requests", function()
    local env = setup({ carts = { peers = peers(81, 82) } }, 1)
    env.new():seed(nil)
    local w = env.new()
    w:resync()
    local up = w.upstreams.carts
    local health = require("nginxgen.balancer.health")
    health.failed(up.health, up.pool.all[2])
    health.failed(up.health, up.pool.all[2])
    local v = w:service("carts")
    eq(v.generation, 1)
    eq(v.balance, "round_robin")
    eq(v.peers[1].fails, 0)
    ok(v.peers[2].out_for and v.peers[2].out_for > 0, "out")
    eq(w:service("nope"), nil)
end)

s.case("a peer a push brings back starts clean; peers that stay keep their record", function()
    local env = setup({ carts = { peers = peers(81, 82, 83) } }, 1)
    local master = env.new()
    master:seed(nil)
    local w = env.new()
    w:resync()
    local up = w.upstreams.carts
    local health = require("nginxgen.balancer.health")
    for _, i in ipairs({ 2, 2, 3, 3 }) do -- max_fails 2: 82 and 83 sit out
        health.failed(up.health, up.pool.all[i])
    end
    local function push(gen, list)
        local body = env.json.encode({ generation = gen, services = { carts = { peers = list } } })
        eq((master:push(body)), 200)
        w:sync()
        local out = {}
        for _, p in ipairs(w:service("carts").peers) do
            out[#out + 1] = p.port .. (p.out_for and " out" or "") .. (p.probation and "?" or "")
        end
        return table.concat(out, ",")
    end
    -- 82 leaves (a restart) while 83 stays (out, and on probation after); 84 is new.
    eq(push(2, peers(81, 83, 84)), "81,83 out?,84")
    -- 82 is back on the same address: served at once, on probation; no failures counted.
    eq(push(3, peers(81, 82, 83, 84)), "81,82?,83 out?,84")
    eq(w:service("carts").peers[2].fails, 0)
    -- An answer ends the probation; one failure on probation takes it out again, so a
    -- registry check that flaps cannot buy a broken peer max_fails requests a time.
    health.succeeded(up.health, up.pool.all[2])
    eq(push(4, peers(81, 82, 83, 84)), "81,82,83 out?,84")
    health.failed(up.health, up.pool.all[2])
    eq(push(5, peers(81, 83, 84)), "81,83 out?,84")
    eq(push(6, peers(81, 82, 83, 84)), "81,82?,83 out?,84")
    health.failed(up.health, up.pool.all[2])
    eq(push(7, peers(81, 82, 83, 84)), "81,82 out?,83 out?,84")
    -- Down (or draining) and up again is a way back too; a peer that stays keeps its record.
    local list = peers(81, 82, 83, 84)
    list[3].state, list[3].weight = "down", 1
    eq(push(8, list), "81,82 out?,83 out?,84")
    eq(push(9, peers(81, 82, 83, 84)), "81,82 out?,83?,84")
    -- A peer with no record gets none: 84 is never on probation.
    list = peers(81, 82, 83, 84)
    list[4].state, list[4].weight = "draining", 0
    eq(push(10, list), "81,82 out?,83?,84")
    eq(push(11, peers(81, 82, 83, 84)), "81,82 out?,83?,84")
end)

s.case("every module loads without touching a global", function()
    t.fresh({ "nginxgen.apikey", "nginxgen.endpoints", "nginxgen.balancer" })
    t.fresh(MODULES)
    local endpoints = require("nginxgen.endpoints")
    local balancer = require("nginxgen.balancer")
    eq(type(endpoints.init), "function")
    eq(type(balancer.balance), "function")
    eq(endpoints.upstream("carts"), nil, "no feed before init")
end)

return s
