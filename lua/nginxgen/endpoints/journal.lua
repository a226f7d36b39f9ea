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
--
-- read_pair(read, path, tries, sleep) → snapshot text, journal text, reads, why | nil
--   The snapshot and its journal are two files the sidecar replaces one after the other
--   (a compaction: the new snapshot, then its new journal) and appends to: a read that
--   falls between can get an old snapshot with the new journal (whose base is above it:
--   the journal would be ignored and nginx would serve older than confirmed), or a record
--   being written. unsettled() tells such a pair; read_pair reads both again, up to
--   `tries` times in all, `sleep` (a blocking one: init cannot yield) in between.

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

-- The generation the snapshot's text starts with, as the sidecar writes it
-- ({"generation":N,...}); nil when it does not start so (the seed then says why).
function _M.snapshot_generation(text)
    return tonumber(match(text, '^%s*{%s*"generation"%s*:%s*(%d+)[,}%s]'))
end

-- Why this snapshot and journal look read mid-write (nil: they do not). A journal of an
-- older snapshot is settled: the sidecar died before starting the new one, and the
-- snapshot holds everything.
function _M.unsettled(snapshot_text, journal_text)
    if snapshot_text == nil or journal_text == nil then
        return nil
    end
    local parsed = _M.parse(journal_text)
    if parsed == nil then
        return nil
    end
    if parsed.cut then
        return "its last record is cut short (" .. parsed.cut .. ")"
    end
    local gen = _M.snapshot_generation(snapshot_text)
    if gen ~= nil and parsed.base > gen then
        return "it continues generation " .. parsed.base .. ", newer than the snapshot's " .. gen
    end
    return nil
end

function _M.read_pair(read, path, tries, sleep)
    local snapshot, text, why
    for i = 1, tries do
        snapshot = read(path)
        text = snapshot and read(path .. ".journal")
        why = _M.unsettled(snapshot, text)
        if why == nil then
            return snapshot, text, i, nil
        end
        if i < tries then
            sleep(0.002)
        end
    end
    return snapshot, text, tries, why
end

return _M
