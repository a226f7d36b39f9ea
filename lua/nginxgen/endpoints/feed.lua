-- The endpoint feed of one nginx process: what it knows (the rendered plan), what it
-- serves (one pool per upstream), and the three ways that changes: seed (master, at
-- start and reload), push (the sidecar), sync (each worker, from the shared dict).
--
-- A Feed owns all of its state; nginxgen.endpoints keeps the one of this process, tests
-- make as many as they like (several Feeds on one dict behave like several workers).

local schema = require("nginxgen.endpoints.schema")
local store = require("nginxgen.endpoints.store")
local json = require("nginxgen.endpoints.json")
local journal = require("nginxgen.endpoints.journal")
local pool = require("nginxgen.balancer.pool")
local health = require("nginxgen.balancer.health")

local _M = {}

local pairs = pairs
local ipairs = ipairs
local setmetatable = setmetatable
local next = next
local tostring = tostring
local max = math.max
local pcall = pcall
local error = error

local Feed = {}
Feed.__index = Feed

local EMPTY = { peers = {} }

-- cfg: { plan = schema.plan result, dict = shared dict, health_dict = shared dict,
--        max_peers = n, sleep = function(seconds), log = function(level, ...) }
function _M.new(cfg)
    local plan = cfg.plan
    local self = setmetatable({
        plan = plan,
        known = plan.upstreams,
        dict = cfg.dict,
        health_dict = cfg.health_dict,
        limits = { max_peers = cfg.max_peers },
        sleep = cfg.sleep,
        log = cfg.log,
        upstreams = {}, -- name → { name, method, pool, conns, health, generation }
        generation = 0, -- what this process serves
        seq = 0,
    }, Feed)
    for name, decl in pairs(plan.upstreams) do
        self.upstreams[name] = {
            name = name,
            method = decl.balance,
            pool = pool.new(EMPTY, decl.balance),
            conns = {}, -- least_conn: active requests per peer key, this worker
            health = health.new(cfg.health_dict, name),
            generation = 0,
            quiet_until = 0, -- "no live peer" is logged once per interval, not per request
        }
    end
    return self
end

local function apply(self, name, text, gen)
    local up = self.upstreams[name]
    if up == nil then
        return false -- another config's upstream (a reload is under way)
    end
    local entry = store.decode(text, pool.peer)
    if entry == nil then
        self.log("error", "nginxgen endpoints: cannot read the stored entry of ", name)
        return false
    end
    up.pool = pool.new(entry, up.method)
    up.generation = gen
    return true
end

-- Rebuilding a pool costs a few microseconds per peer; `yield` (ngx.sleep(0) where the
-- phase allows it) lets requests through between batches of a large change.
local BATCH = 200

local function apply_all(self, names, yield)
    local n = 0
    for name in pairs(names) do
        local text, g = store.read(self.dict, name)
        if text and apply(self, name, text, g) then
            n = n + 1
            if yield and n % BATCH == 0 then
                yield()
            end
        end
    end
    return n
end

-- Read every known service again (a new worker, or one that fell behind the log).
function Feed:resync(yield)
    local gen, seq = store.generation(self.dict)
    apply_all(self, self.upstreams, yield)
    self.generation, self.seq = gen, seq
end

-- Apply what was committed since this worker last looked. Returns the number of
-- services rebuilt (0 when nothing changed: one dict lookup; -1 after a resync).
-- One sync at a time: a push handled while the timer applies waits for the next tick.
function Feed:sync(yield)
    if self.syncing then
        return 0
    end
    local changed, gen, seq = store.changes(self.dict, self.seq)
    if changed ~= nil and seq == self.seq then
        return 0
    end
    self.syncing = true
    local ok, n = pcall(function()
        if changed == nil then
            self:resync(yield)
            return -1
        end
        local count = apply_all(self, changed, yield)
        self.generation, self.seq = gen or self.generation, seq
        return count
    end)
    self.syncing = false
    if not ok then
        error(n, 0)
    end
    return n
end

-- Commit under the lock, checking the generation again there. `equal_ok`: the seed may
-- write at the generation the dict already holds (services new to this config).
local function commit(self, gen, entries, wait_for, equal_ok)
    local owner = tostring(self) .. " " .. gen
    if not store.lock(self.dict, owner, self.sleep, wait_for) then
        return nil, 503, { error = "another push is being applied; try again" }
    end
    local current = store.generation(self.dict)
    if gen < current or (gen == current and not equal_ok) then
        store.unlock(self.dict, owner)
        return nil, 409, {
            error = "generation " .. gen .. " is not newer than the current generation " .. current,
            field = "generation",
            current = current,
        }
    end
    local seq, err = store.commit(self.dict, gen, entries)
    store.unlock(self.dict, owner)
    if not seq then
        return nil, 507, {
            error = err .. " (the shared dict is full: give lua_shared_dict more memory); nothing changed",
        }
    end
    return seq
end

-- The peers of `entry` that were not up in service `name` before this push: the ones it
-- adds, or brings back up, as {key, fail_timeout} (health.returned). A unit restarted on
-- its address would otherwise sit out the fail_timeout its failures before the restart
-- earned it, though the registry and the probes say it is back. Only upstreams where
-- something failed lately hold any record; what was up before is read from this worker's
-- pool when it serves the stored entry (no decode), from the dict otherwise.
local function arrivals(self, name, entry)
    local up = self.upstreams[name]
    if up == nil or not health.recent(up.health) then
        return nil
    end
    local before
    if up.generation == store.current(self.dict, name) then
        before = up.pool.all
    else
        local text = store.read(self.dict, name)
        before = text and store.decode(text, pool.peer)
        before = before and before.peers
    end
    local was_up = {}
    for _, p in ipairs(before or EMPTY.peers) do
        if p.state == "up" then
            was_up[p.key] = true
        end
    end
    local back = {}
    for _, p in ipairs(entry.peers) do
        local k = pool.key(p.host, p.port)
        if p.state == "up" and not was_up[k] then
            back[#back + 1] = { k, p.fail_timeout }
        end
    end
    return #back > 0 and back or nil
end

-- A push body (raw JSON text) → HTTP status and an answer table. Nothing is written
-- unless the whole body is valid and its generation newer than the current one.
function Feed:push(body, yield)
    local doc, jerr = json.decode(body)
    if doc == nil then
        return 400, { error = "the body is not valid JSON: " .. tostring(jerr) }
    end
    local push, err = schema.push(doc, self.known, self.limits)
    if not push then
        return 400, err
    end
    local current = store.generation(self.dict)
    if push.generation <= current then
        return 409, {
            error = "generation " .. push.generation .. " is not newer than the current generation "
                .. current,
            field = "generation",
            current = current,
        }
    end
    local back, seen = {}, 0
    for name, entry in pairs(push.services) do
        back[name] = arrivals(self, name, entry)
        seen = seen + 1
        if yield and seen % BATCH == 0 then
            yield()
        end
    end
    local seq, status, answer = commit(self, push.generation, push.services, 1, false)
    if not seq then
        return status, answer
    end
    for name, keys in pairs(back) do
        health.returned(self.upstreams[name].health, keys)
    end
    local n = 0
    for _ in pairs(push.services) do
        n = n + 1
    end
    if n <= BATCH then
        self:sync(yield) -- the worker that took a small push serves it at once
    end -- a large one is applied by this worker's timer, like by the others
    return 200, { generation = push.generation, services = n }
end

-- The snapshot's journal applied to it (`snap`, schema.snapshot's result, changed in
-- place): the records that continue this snapshot, in order, each above the one before.
-- Nothing here fails the start. The first record that cannot be used ends the replay, as
-- a torn one does: the records after it were pushes over a state this one made, and
-- applying them without it would serve a mix that never existed (deploy/journal.py
-- replay stops at the same record).
local function replay(self, snap, text, name)
    local where = "nginxgen endpoints: the boot snapshot's journal " .. name
    local parsed, why = journal.parse(text)
    if parsed == nil then
        self.log("error", where, " is ignored: ", why)
        return
    end
    if parsed.base ~= snap.generation then
        -- the sidecar rewrote the snapshot and died before starting its journal
        self.log("notice", where, " continues generation ", parsed.base, ", not the snapshot's ",
            snap.generation, "; ignored")
        return
    end
    if parsed.cut then
        self.log("warn", where, ": ignoring ", parsed.cut, " (a write cut short)")
    end
    local applied, skipped = 0, 0
    for i, payload in ipairs(parsed.records) do
        local doc, jerr = json.decode(payload)
        local rec, err
        if doc == nil then
            err = "not valid JSON: " .. tostring(jerr)
        else
            rec, err = schema.snapshot(doc, self.known, self.limits)
            err = err and err.error
        end
        if rec and rec.generation <= snap.generation then
            rec, err = nil, "generation " .. rec.generation .. " is not above " .. snap.generation
        end
        if not rec then
            self.log("error", where, ": record ", i, " refused: ", err, "; it and the ",
                #parsed.records - i, " record(s) after it are ignored")
            break
        else
            for svc, entry in pairs(rec.services) do
                snap.services[svc] = entry
            end
            snap.generation, applied, skipped = rec.generation, applied + 1, skipped + #rec.skipped
        end
    end
    if skipped > 0 then
        self.log("warn", where, " names ", skipped, " service(s) this config does not have; skipped")
    end
    if applied > 0 then
        self.log("notice", where, ": ", applied, " record(s) applied, up to generation ",
            snap.generation)
    end
end

-- Master, in init_by_lua: bring the dict to the newest of what it holds (pushes survive
-- a HUP), the boot snapshot (with its journal) and the rendered plan, per service by
-- generation; ties keep the dict, then the snapshot, except that a dict still at
-- generation 0 (filled from rendered plans only) gives way to the plan. Forgets services
-- the config no longer has. `snapshot_text` and `journal_text` are the files' content
-- (nil: none). Returns a one-line summary.
function Feed:seed(snapshot_text, snapshot_name, journal_text)
    local dict, plan = self.dict, self.plan
    for _, name in ipairs(store.names(dict)) do
        if self.known[name] == nil then
            store.forget(dict, name)
        end
    end
    local snap
    if snapshot_text ~= nil then
        local doc, jerr = json.decode(snapshot_text)
        if doc == nil then
            self.log("error", "nginxgen endpoints: ignoring the boot snapshot ", snapshot_name,
                ": not valid JSON: ", jerr)
        else
            local err
            snap, err = schema.snapshot(doc, self.known, self.limits)
            if not snap then
                self.log("error", "nginxgen endpoints: ignoring the boot snapshot ", snapshot_name,
                    ": ", err.error)
            elseif #snap.skipped > 0 then
                self.log("warn", "nginxgen endpoints: the boot snapshot ", snapshot_name, " lists ",
                    #snap.skipped, " service(s) this config does not have; skipped")
            end
        end
    end
    if snap and journal_text ~= nil then
        replay(self, snap, journal_text, tostring(snapshot_name) .. ".journal")
    end
    local held = store.generation(dict)
    local s_gen = snap and snap.generation or 0
    local writes, from = {}, { dict = 0, snapshot = 0, plan = 0 }
    for name in pairs(self.known) do
        local src, best = nil, -1
        if store.read(dict, name) then
            src, best = "dict", held
        end
        if snap and snap.services[name] and s_gen > best then
            src, best = "snapshot", s_gen
            writes[name] = snap.services[name]
        end
        -- Generation 0 is "as rendered": a dict that never saw a push or a snapshot
        -- holds an earlier render's endpoints, and the config being loaded is newer.
        if plan.services[name] and (plan.generation > best or (src == "dict" and held == 0)) then
            src = "plan"
            writes[name] = plan.services[name]
        end
        if src then
            from[src] = from[src] + 1
        end
    end
    local gen = max(held, s_gen, plan.generation)
    if next(writes) ~= nil or gen > held then
        local seq, _, answer = commit(self, gen, writes, 5, true)
        if not seq then
            error("nginxgen endpoints: cannot seed the endpoints: " .. answer.error)
        end
    end
    return "generation " .. gen .. " (services from pushes kept: " .. from.dict
        .. ", from the boot snapshot: " .. from.snapshot .. ", from the config: " .. from.plan .. ")"
end

-- Generations served by the workers, for the sidecar's confirmation.
function Feed:status(worker_count)
    local gen, seq = store.generation(self.dict)
    local workers = store.workers(self.dict, worker_count)
    local converged = #workers == worker_count
    for i = 1, #workers do
        if workers[i].seq ~= seq then
            converged = false
        end
    end
    local answer = {
        generation = gen, worker_count = worker_count, workers = workers, converged = converged,
    }
    local dict = self.dict
    if dict.capacity and dict.free_space then
        -- free_space counts whole free pages only: an estimate, on the low side
        answer.dict = { capacity = dict:capacity(), free = dict:free_space() }
    end
    return answer
end

-- One service as this worker serves it, with the shared health state of each peer.
function Feed:service(name)
    local up = self.upstreams[name]
    if up == nil then
        return nil
    end
    local peers = {}
    for i, p in ipairs(up.pool.all) do
        local h = health.state(up.health, p)
        peers[i] = {
            host = p.host, port = p.port, weight = p.weight, state = p.state, backup = p.backup,
            max_fails = p.max_fails, fail_timeout = p.fail_timeout,
            fails = h.fails, out_for = h.out_for, probation = h.probation,
            active = up.conns[p.key] or 0,
        }
    end
    return {
        service = name, generation = up.generation, balance = up.method, tries = up.pool.tries,
        peers = peers,
    }
end

function Feed:heartbeat(id, pid)
    store.heartbeat(self.dict, id, pid, self.generation, self.seq)
end

return _M
