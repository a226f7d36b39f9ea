-- Where the endpoint feed lives in its lua_shared_dict, and how a generation is committed.
--
-- Keys (names are upstream names, which never hold "|" or a newline):
--   g            generation last committed (what pushes must exceed)
--   q            commit sequence number; +1 per commit (generations may jump)
--   l|SEQ        change log: "GEN\nNAME\nNAME..." — what commit SEQ wrote
--   c|NAME       generation of NAME's current entry
--   s|NAME|GEN   NAME's entry as written at GEN (compact JSON, already validated)
--   w|ID         worker ID's heartbeat: "PID GEN SEQ"
--   lock         held while one commit runs
-- Commits write new keys first and move `q` last, so a commit that fails half-way (the
-- dict is full) is undone and changes nothing; safe_set never evicts another entry.
-- A worker replays l|SEQ entries after its own SEQ, or reads everything again (resync)
-- when it fell further behind than the log keeps.

local json = require("nginxgen.endpoints.json")

local _M = {}

local tonumber = tonumber
local tostring = tostring
local ipairs = ipairs
local type = type
local pairs = pairs
local concat = table.concat
local find = string.find
local sub = string.sub
local gmatch = string.gmatch
local match = string.match

_M.LOG_KEEP = 512 -- commits kept in the change log
_M.LOCK_TTL = 10 -- seconds: a worker that dies holding the lock does not block forever
_M.HEARTBEAT_TTL = 5 -- seconds a worker's report stays without a refresh

local STATE_CODE = { up = 0, draining = 1, down = 2 }
local STATE_NAME = { [0] = "up", [1] = "draining", [2] = "down" }

-- entry {tries?, peers} → compact JSON: {"t":N,"p":[[host,port,weight,state,backup,
-- max_fails,fail_timeout],...]}. Positions, not names: a third of the size.
function _M.encode(entry)
    local rows = {}
    local peers = entry.peers
    for i = 1, #peers do
        local p = peers[i]
        rows[i] = {
            p.host, p.port, p.weight, STATE_CODE[p.state], p.backup and 1 or 0,
            p.max_fails, p.fail_timeout,
        }
    end
    return json.encode({ t = entry.tries, p = rows })
end

local function plain_peer(host, port, weight, state, backup, max_fails, fail_timeout)
    return {
        host = host, port = port, weight = weight, state = state, backup = backup,
        max_fails = max_fails, fail_timeout = fail_timeout,
    }
end

-- compact JSON → {tries, peers}; `make_peer(host, port, weight, state, backup, max_fails,
-- fail_timeout)` builds each peer (default: a plain table of those fields).
function _M.decode(text, make_peer)
    local doc = json.decode(text)
    if type(doc) ~= "table" or type(doc.p) ~= "table" then
        return nil
    end
    make_peer = make_peer or plain_peer
    local peers = {}
    local rows = doc.p
    for i = 1, #rows do
        local r = rows[i]
        peers[i] = make_peer(r[1], r[2], r[3], STATE_NAME[r[4]], r[5] == 1, r[6], r[7])
    end
    return { tries = doc.t, peers = peers }
end

function _M.generation(dict)
    return dict:get("g") or 0, dict:get("q") or 0
end

-- Take the commit lock; `wait(seconds)` sleeps between attempts (ngx.sleep in a request,
-- a blocking sleep in init_by_lua). Returns a token for unlock, or nil.
function _M.lock(dict, owner, wait, timeout)
    local waited = 0
    while true do
        local ok = dict:safe_add("lock", owner, _M.LOCK_TTL)
        if ok then
            return owner
        end
        if waited >= timeout then
            return nil
        end
        wait(0.005)
        waited = waited + 0.005
    end
end

function _M.unlock(dict, owner)
    if dict:get("lock") == owner then
        dict:delete("lock")
    end
end

local function undo(dict, written)
    for i = #written, 1, -1 do
        local w = written[i]
        if w[2] == nil then
            dict:delete(w[1])
        else
            dict:set(w[1], w[2]) -- an old number back in its own slot: never needs memory
        end
    end
end

-- Write `entries` (name → entry) as generation `gen`; the caller holds the lock and has
-- checked the generation. Returns the new sequence number, or nil and a reason.
function _M.commit(dict, gen, entries)
    local written = {} -- {key, old value}: what to undo
    local names = {}
    local old_gens = {}
    for name, entry in pairs(entries) do
        local key = "s|" .. name .. "|" .. gen
        local ok, err = dict:safe_set(key, _M.encode(entry))
        written[#written + 1] = { key, nil }
        if not ok then
            undo(dict, written)
            return nil, "cannot store service " .. name .. ": " .. tostring(err)
        end
        names[#names + 1] = name
    end
    local _, seq = _M.generation(dict)
    seq = seq + 1
    local ok, err = dict:safe_set("l|" .. seq, gen .. "\n" .. concat(names, "\n"))
    written[#written + 1] = { "l|" .. seq, nil }
    if not ok then
        undo(dict, written)
        return nil, "cannot store the change log: " .. tostring(err)
    end
    for i = 1, #names do
        local key = "c|" .. names[i]
        local old = dict:get(key)
        ok, err = dict:safe_set(key, gen)
        written[#written + 1] = { key, old }
        if not ok then
            undo(dict, written)
            return nil, "cannot store service " .. names[i] .. ": " .. tostring(err)
        end
        if old and old ~= gen then
            old_gens[names[i]] = old
        end
    end
    local g_old, q_old = dict:get("g"), dict:get("q")
    ok, err = dict:safe_set("g", gen)
    if ok then
        ok, err = dict:safe_set("q", seq)
    end
    if not ok then
        if g_old then dict:set("g", g_old) else dict:delete("g") end
        if q_old then dict:set("q", q_old) else dict:delete("q") end
        undo(dict, written)
        return nil, "cannot store the generation: " .. tostring(err)
    end
    -- Committed. What the previous entries and the oldest log held is garbage now.
    for name, old in pairs(old_gens) do
        dict:delete("s|" .. name .. "|" .. old)
    end
    dict:delete("l|" .. (seq - _M.LOG_KEEP))
    return seq
end

-- The committed entry of one service: (compact text, generation) or nil.
function _M.read(dict, name)
    for _ = 1, 3 do -- a commit may move c|NAME between the two reads: look again
        local gen = dict:get("c|" .. name)
        if gen == nil then
            return nil
        end
        local text = dict:get("s|" .. name .. "|" .. gen)
        if text then
            return text, gen
        end
    end
    return nil
end

-- The generation of NAME's current entry (nil: none).
function _M.current(dict, name)
    return dict:get("c|" .. name)
end

-- Commits after `since`: (names changed, generation, seq) or (nil, gen, seq) when the log
-- no longer reaches back that far and the caller must read every service again.
function _M.changes(dict, since)
    local seq = dict:get("q") or 0
    if seq <= since then
        return {}, nil, seq
    end
    local changed, gen = {}, nil
    for s = since + 1, seq do
        local entry = dict:get("l|" .. s)
        if entry == nil then
            return nil, dict:get("g") or 0, seq
        end
        local nl = find(entry, "\n", 1, true)
        gen = tonumber(nl and sub(entry, 1, nl - 1) or entry)
        if nl then
            for name in gmatch(sub(entry, nl + 1), "[^\n]+") do
                changed[name] = true
            end
        end
    end
    return changed, gen, seq
end

-- Names of every service with a committed entry (init only: walks the whole dict).
function _M.names(dict)
    local out = {}
    for _, key in ipairs(dict:get_keys(0)) do
        local name = match(key, "^c|(.+)$")
        if name then
            out[#out + 1] = name
        end
    end
    return out
end

function _M.forget(dict, name)
    local gen = dict:get("c|" .. name)
    if gen then
        dict:delete("s|" .. name .. "|" .. gen)
    end
    dict:delete("c|" .. name)
end

function _M.heartbeat(dict, id, pid, gen, seq)
    dict:safe_set("w|" .. id, pid .. " " .. gen .. " " .. seq, _M.HEARTBEAT_TTL)
end

-- Reports of workers 0..count-1: { {id, pid, generation, seq}, ... }; absent ones skipped.
function _M.workers(dict, count)
    local out = {}
    for id = 0, count - 1 do
        local v = dict:get("w|" .. id)
        if v then
            local pid, gen, seq = match(v, "^(%d+) (%d+) (%d+)$")
            out[#out + 1] = {
                id = id, pid = tonumber(pid), generation = tonumber(gen), seq = tonumber(seq),
            }
        end
    end
    return out
end

return _M
