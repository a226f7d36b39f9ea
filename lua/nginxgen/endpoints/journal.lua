-- The boot snapshot's delta journal, as the master reads it at start and reload
-- (nginxgen/deploy/journal.py writes it; docs/dynamic-endpoints.md):
--
--   nginxgen-endpoints-journal 1 base=<the snapshot's generation>\n
--   <payload length> <crc32 of the payload, 8 hex digits>\n<payload>\n     (one per push)
--
-- parse(text) → { base, records = { payload, ... }, cut = why | nil } | nil, why
--   `cut` says why the bytes after the last whole record were ignored: a record cut
--   short by a crash mid-write, or one whose checksum fails (nothing after it is framed
--   for sure). Validating a payload is the feed's job (a push document, schema.snapshot).

local _M = {}

local find = string.find
local sub = string.sub
local match = string.match
local byte = string.byte
local tonumber = tonumber
local crc32 = ngx.crc32_long

_M.MAGIC = "nginxgen-endpoints-journal 1"

local NEWLINE = 10

-- (payload, next position) of the record at `pos`, or (nil, why).
local function record_at(text, pos)
    local nl = find(text, "\n", pos, true)
    if nl == nil or nl - pos > 31 then
        return nil, "an incomplete record header"
    end
    local len, sum = match(sub(text, pos, nl - 1), "^(%d+) (%x%x%x%x%x%x%x%x)$")
    if len == nil then
        return nil, "not a record header"
    end
    len = tonumber(len)
    local last = nl + len -- the payload's last byte
    if last + 1 > #text then
        return nil, "a record cut short"
    end
    local payload = sub(text, nl + 1, last)
    if byte(text, last + 1) ~= NEWLINE or crc32(payload) ~= tonumber(sum, 16) then
        return nil, "a record whose checksum does not match"
    end
    return payload, last + 2
end

function _M.parse(text)
    local nl = find(text, "\n", 1, true)
    local base = nl and match(sub(text, 1, nl - 1), "^nginxgen%-endpoints%-journal 1 base=(%d+)$")
    if base == nil then
        return nil, "not a journal (no header line)"
    end
    local records, pos, n = {}, nl + 1, #text
    while pos <= n do
        local payload, after = record_at(text, pos)
        if payload == nil then
            return {
                base = tonumber(base), records = records,
                cut = (n - pos + 1) .. " bytes at offset " .. (pos - 1) .. ": " .. after,
            }
        end
        records[#records + 1] = payload
        pos = after
    end
    return { base = tonumber(base), records = records }
end

return _M
