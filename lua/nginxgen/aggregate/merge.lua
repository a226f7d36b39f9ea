-- nginxgen.aggregate.merge: parts' JSON bodies into one answer, exactly as they came.
--
-- A body is checked with cjson (strict: no NaN, Infinity or hex numbers, bounded depth)
-- but never re-encoded: cjson would print numbers with 14 digits and turn [] into {}.
-- allow/deny work on the top-level members of an object, found by a scanner that only
-- runs on text cjson has accepted, and copied byte for byte.

local cjson = require("cjson.safe").new()

cjson.decode_max_depth(128)
cjson.decode_invalid_numbers(false)

local byte = string.byte
local find = string.find
local sub = string.sub
local concat = table.concat
local ipairs = ipairs
local type = type

local _M = {}

local QUOTE, BACKSLASH = 34, 92
local LBRACE, RBRACE, LBRACKET, RBRACKET = 123, 125, 91, 93
local COMMA, COLON = 44, 58

local function skip_ws(text, i)
    local _, e = find(text, "^[ \t\r\n]*", i)
    return e + 1
end

-- i at an opening quote → the index after the closing one.
local function skip_string(text, i)
    local j = i + 1
    while true do
        local k = find(text, '["\\]', j)
        if byte(text, k) == BACKSLASH then
            j = k + 2
        else
            return k + 1
        end
    end
end

-- i at the first byte of a value → the index after it.
local function skip_value(text, i)
    local c = byte(text, i)
    if c == QUOTE then
        return skip_string(text, i)
    end
    if c ~= LBRACE and c ~= LBRACKET then
        local _, e = find(text, "^[^,}%] \t\r\n]+", i)
        return e + 1
    end
    local depth, j = 0, i
    while true do
        local k = find(text, '["{}%[%]]', j)
        local b = byte(text, k)
        if b == QUOTE then
            j = skip_string(text, k)
        else
            depth = depth + ((b == LBRACE or b == LBRACKET) and 1 or -1)
            j = k + 1
            if depth == 0 then
                return j
            end
        end
    end
end

-- The body as JSON text, or nil and why not.
function _M.check(body)
    if type(body) ~= "string" or body == "" then
        return nil, "empty body"
    end
    local value, err = cjson.decode(body)
    if value == nil and err then
        return nil, "not JSON"
    end
    return body
end

-- Top-level members of a checked JSON object: { {key, raw key text, raw value text} ...},
-- or nil when the text is not an object.
function _M.members(text)
    local i = skip_ws(text, 1)
    if byte(text, i) ~= LBRACE then
        return nil
    end
    local out = {}
    i = skip_ws(text, i + 1)
    if byte(text, i) == RBRACE then
        return out
    end
    while true do
        local key_end = skip_string(text, i)
        local raw_key = sub(text, i, key_end - 1)
        local key = cjson.decode(raw_key)
        i = skip_ws(text, key_end)
        if byte(text, i) ~= COLON then
            return nil
        end
        i = skip_ws(text, i + 1)
        local value_end = skip_value(text, i)
        out[#out + 1] = { key, raw_key, sub(text, i, value_end - 1) }
        i = skip_ws(text, value_end)
        local c = byte(text, i)
        if c == RBRACE then
            return out
        end
        if c ~= COMMA then
            return nil
        end
        i = skip_ws(text, i + 1)
    end
end

local function set_of(list)
    local out = {}
    for _, v in ipairs(list) do
        out[v] = true
    end
    return out
end

-- A checked body with only the allowed (or without the denied) top-level fields; nil
-- and why when it is not an object (there are no fields to choose from).
function _M.filter(text, allow, deny)
    if not allow and not deny then
        return text
    end
    local members = _M.members(text)
    if not members then
        return nil, "not a JSON object"
    end
    local keep = allow and set_of(allow)
    local drop = deny and set_of(deny)
    local out = {}
    for _, m in ipairs(members) do
        local name = m[1]
        if (keep and keep[name]) or (drop and not drop[name]) then
            out[#out + 1] = m[2] .. ":" .. m[3]
        end
    end
    return "{" .. concat(out, ",") .. "}"
end

-- names and their texts (nil: null) → one object in that order.
function _M.object(names, texts)
    local out = {}
    for i, name in ipairs(names) do
        out[i] = cjson.encode(name) .. ":" .. (texts[i] or "null")
    end
    return "{" .. concat(out, ",") .. "}"
end

_M.encode = cjson.encode

return _M
