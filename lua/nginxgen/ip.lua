-- IP address literals for the endpoint feed: IPv4 dotted quads and IPv6, never names.
--
-- `parse` answers the canonical spelling (IPv6 as RFC 5952: lowercase, longest run of
-- zero groups as "::"), so one peer has one health key however the registry spelled it.
-- Nothing else passes: no names, zones (%eth0), brackets, ports, spaces or leading zeros
-- (inet_aton would read "010" as octal; nginx reads it as decimal; we refuse the doubt).

local _M = {}

local tonumber = tonumber
local find = string.find
local sub = string.sub
local lower = string.lower
local format = string.format
local match = string.match
local concat = table.concat

local function ipv4(text)
    local a, b, c, d = match(text, "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
    if not a then
        return nil
    end
    local parts = { a, b, c, d }
    for i = 1, 4 do
        local p = parts[i]
        if #p > 1 and sub(p, 1, 1) == "0" then
            return nil, "leading zeros in an IPv4 address are ambiguous"
        end
        if tonumber(p) > 255 then
            return nil, "IPv4 parts must be 0-255"
        end
    end
    return text
end

-- Groups of a half ("a:b:c") as numbers; an embedded IPv4 tail becomes two groups.
local function groups_of(half, out, allow_v4)
    if half == "" then
        return true
    end
    local start = 1
    while true do
        local colon = find(half, ":", start, true)
        local g = colon and sub(half, start, colon - 1) or sub(half, start)
        if not colon and allow_v4 and find(g, ".", 1, true) then
            if not ipv4(g) then
                return false
            end
            local a, b, c, d = match(g, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
            out[#out + 1] = tonumber(a) * 256 + tonumber(b)
            out[#out + 1] = tonumber(c) * 256 + tonumber(d)
            return true
        end
        if not match(g, "^%x%x?%x?%x?$") then
            return false
        end
        out[#out + 1] = tonumber(g, 16)
        if not colon then
            return true
        end
        start = colon + 1
    end
end

local function ipv6(text)
    if #text > 45 or not match(text, "^[%x:.]+$") then
        return nil
    end
    local head, tail = {}, {}
    local gap = find(text, "::", 1, true)
    if gap then
        if find(text, "::", gap + 1, true) then
            return nil
        end
        if not groups_of(sub(text, 1, gap - 1), head, false)
            or not groups_of(sub(text, gap + 2), tail, true) then
            return nil
        end
        if #head + #tail > 7 then
            return nil
        end
    else
        if not groups_of(text, head, true) or #head ~= 8 then
            return nil
        end
    end
    local g = {}
    for i = 1, #head do
        g[i] = head[i]
    end
    for _ = #head + 1, 8 - #tail do
        g[#g + 1] = 0
    end
    for i = 1, #tail do
        g[#g + 1] = tail[i]
    end
    -- RFC 5952: compress the longest run (>= 2) of zero groups, the first one on a tie.
    local best_at, best_len, run_at, run_len = 0, 0, 0, 0
    for i = 1, 8 do
        if g[i] == 0 then
            if run_len == 0 then
                run_at = i
            end
            run_len = run_len + 1
            if run_len > best_len then
                best_at, best_len = run_at, run_len
            end
        else
            run_len = 0
        end
    end
    local out = {}
    local i = 1
    while i <= 8 do
        if best_len >= 2 and i == best_at then
            out[#out + 1] = (i == 1) and ":" or ""
            i = i + best_len
            if i > 8 then
                out[#out + 1] = ""
            end
        else
            out[#out + 1] = format("%x", g[i])
            i = i + 1
        end
    end
    return concat(out, ":")
end

-- (canonical text, 4 or 6) for an IP literal; nil and a reason otherwise.
function _M.parse(text)
    if type(text) ~= "string" then
        return nil, "must be a string"
    end
    if find(text, ":", 1, true) then
        local canon = ipv6(lower(text))
        if not canon then
            return nil, "not an IPv6 literal (no brackets, zones or names)"
        end
        if canon == "::" then
            return nil, "the unspecified address :: cannot be a peer"
        end
        return canon, 6
    end
    local canon, why = ipv4(text)
    if not canon then
        return nil, why or "not an IP address literal (host names are not accepted)"
    end
    if canon == "0.0.0.0" then
        return nil, "the unspecified address 0.0.0.0 cannot be a peer"
    end
    return canon, 4
end

return _M
