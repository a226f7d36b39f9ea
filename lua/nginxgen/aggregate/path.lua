-- nginxgen.aggregate.path: a part's upstream URI from its template pieces.
--
-- nginxgen decided the template when it read the spec (nginxgen/spec/aggregate.py): literal
-- URL text, and placeholders that each fill one whole path segment. Here each value is
-- percent-encoded so that it stays that one segment: every byte but A-Z a-z 0-9 - . _ ~
-- becomes %XX. Values that would still mean something else to a backend that decodes the
-- path before routing it are refused instead: '/' and '\' (a separator once decoded), "."
-- and ".." (a dot segment), empty ones and ones longer than MAX_VALUE.

local byte = string.byte
local format = string.format
local gsub = string.gsub
local find = string.find
local concat = table.concat
local ipairs = ipairs
local type = type

local _M = {}

_M.MAX_VALUE = 1024

local function hex(c)
    return format("%%%02X", byte(c))
end

-- value → its encoded segment, or nil and why it cannot be one.
function _M.encode(value)
    if type(value) ~= "string" or value == "" then
        return nil, "missing"
    end
    if #value > _M.MAX_VALUE then
        return nil, "too long"
    end
    if value == "." or value == ".." then
        return nil, "a dot segment"
    end
    if find(value, "[/\\]") then
        return nil, "holds a path separator"
    end
    return (gsub(value, "[^A-Za-z0-9%-._~]", hex))
end

-- The Nth segment of a path ("/a/b/c", 2 → "b"); nil past the end.
function _M.segment(path, n)
    local i = 0
    for seg in string.gmatch(path or "", "[^/]+") do
        i = i + 1
        if i == n then
            return seg
        end
    end
    return nil
end

-- pieces (from the configuration) and lookup(piece) → the raw value of a placeholder.
-- Returns the URI, or nil, the piece's source (e.g. "cookie.session") and why.
function _M.expand(pieces, lookup)
    local out = {}
    for i, piece in ipairs(pieces) do
        local text = piece.text
        if text then
            out[i] = text
        else
            local encoded, why = _M.encode(lookup(piece))
            if not encoded then
                return nil, piece.source, why
            end
            out[i] = encoded
        end
    end
    return concat(out)
end

return _M
