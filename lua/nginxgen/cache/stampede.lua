-- nginxgen.cache.stampede: one request per key fills the cache; concurrent misses wait
-- for it, but never longer than `stampede_wait` after the fill began.
--
-- The lock (in the state dict shared by all workers) holds the time its fill started.
-- A waiter's deadline is that start plus the wait, not its own arrival plus the wait: a
-- waiter whose filler has already taken longer than the wait goes upstream at once,
-- instead of adding the wait to a request the lock can no longer help.
-- Clock and sleep are arguments, so tests (tests/lua/cache_stampede_test.lua) drive them.

local min = math.min
local max = math.max
local floor = math.floor

local MIN_SLEEP = 0.001  -- seconds; nginx's clock and timers have millisecond resolution

local _M = {}

local function lock_key(key)
    return "lock:" .. key
end

-- Take the fill for `key`: true when this request is the one to go upstream and store.
function _M.acquire(state, key, now, ttl)
    return (state:add(lock_key(key), now, ttl))
end

function _M.release(state, key)
    state:delete(lock_key(key))
end

-- Wait for the fill of `key`. Returns "released" (look in the cache again) or "late"
-- (the fill has run for longer than `wait`: go upstream now).
function _M.wait(state, key, wait, now, sleep)
    local lk = lock_key(key)
    local started = state:get(lk)
    if not started then
        return "released"
    end
    local deadline = started + wait
    local step = 0.005
    -- Each sleep is at least 1 ms: ngx.sleep(0) on stock nginx (no delayed-events patch)
    -- returns without letting nginx update its clock, so a loop waiting for `now` to pass
    -- a deadline less than 1 ms away would spin forever. The count bounds it regardless.
    for _ = 1, floor(wait / MIN_SLEEP) + 2 do
        local left = deadline - now()
        if left <= 0 then
            return "late"
        end
        sleep(max(MIN_SLEEP, min(step, left)))
        step = min(step * 2, 0.05)
        -- Gone, or another fill's lock (this one expired): either way, look again.
        if state:get(lk) ~= started then
            return "released"
        end
    end
    return "late"
end

return _M
