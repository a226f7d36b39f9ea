-- Unit tests for nginxgen.endpoints.journal (run inside nginx by test_lua_suites.py): the
-- framing nginxgen/deploy/journal.py writes, read back the way the master does at start.

local t = require("harness")

local s = t.suite()
local eq, ok, contains = t.eq, t.ok, t.contains

local function journal()
    t.fresh({ "nginxgen.endpoints.journal" })
    return require("nginxgen.endpoints.journal")
end

-- One record as the sidecar frames it (deploy/journal.py frame()).
local function frame(payload)
    return string.format("%d %08x\n", #payload, ngx.crc32_long(payload)) .. payload .. "\n"
end

local HEADER = "nginxgen-endpoints-journal 1 base=7\n"
local R8 = '{"generation":8,"services":{"carts":{"peers":[]}}}'
local R9 = '{"generation":9,"services":{"users":{"peers":[]}}}'

s.case("the checksum is the sidecar's (zlib.crc32)", function()
    eq(ngx.crc32_long("hello"), 0x3610a686, "crc32 of hello, as Python's zlib computes it")
    eq(ngx.crc32_long("a"), 0xe8b7be43, "the top bit set: unsigned, as the sidecar writes it")
    -- deploy/journal.py frame(b"hello"), byte for byte
    eq(frame("hello"), "5 3610a686\nhello\n")
end)

s.case("records are read back in order after the header", function()
    local j = journal()
    local got = assert(j.parse(HEADER .. frame(R8) .. frame(R9)))
    eq(got.base, 7)
    eq(#got.records, 2)
    eq(got.records[1], R8)
    eq(got.records[2], R9)
    eq(got.cut, nil)
    got = assert(j.parse(HEADER))
    eq(#got.records, 0, "a journal just started")
end)

s.case("a torn last record is ignored wherever the write stopped", function()
    local j = journal()
    local whole = HEADER .. frame(R8)
    local last = frame(R9)
    for cut = 1, #last - 1 do
        local got = assert(j.parse(whole .. last:sub(1, cut)))
        eq(#got.records, 1, "cut at " .. cut)
        eq(got.records[1], R8)
        contains(got.cut, cut .. " bytes at offset " .. #whole .. ": ")
    end
end)

s.case("a damaged record ends the journal there", function()
    local j = journal()
    local bad = frame(R8):gsub('"carts"', '"carta"') -- same length, another checksum
    local got = assert(j.parse(HEADER .. bad .. frame(R9)))
    eq(#got.records, 0)
    contains(got.cut, "checksum does not match")
    got = assert(j.parse(HEADER .. "x y\n" .. frame(R9)))
    contains(got.cut, "not a record header")
    got = assert(j.parse(HEADER .. string.rep("9", 40)))
    contains(got.cut, "an incomplete record header")
    got = assert(j.parse(HEADER .. "99999999999 00000000\n{}\n"))
    contains(got.cut, "a record cut short")
end)

s.case("text that is not a journal is refused as a whole", function()
    local j = journal()
    local got, why = j.parse('{"generation": 9}\n')
    eq(got, nil)
    contains(why, "not a journal")
    ok(j.parse("") == nil, "an empty file")
    ok(j.parse("nginxgen-endpoints-journal 1 base=x\n") == nil, "a bad base")
end)

-- A reader that answers each path from its own list, one entry per read (the last again).
local function reader(files)
    local seen = {}
    return function(path)
        local list = files[path]
        seen[path] = (seen[path] or 0) + 1
        return list and list[math.min(seen[path], #list)]
    end, seen
end

local S7 = '{"generation":7,"services":{}}'
local S9 = '{"generation":9,"services":{}}'
local J9 = "nginxgen-endpoints-journal 1 base=9\n"

s.case("a pair read mid-write is told from a settled one", function()
    local j = journal()
    eq(j.snapshot_generation(S7), 7)
    eq(j.snapshot_generation('{"generation": 12 , "x": 1}'), 12)
    eq(j.snapshot_generation('{"services":{},"generation":7}'), nil, "not as the sidecar writes it")
    eq(j.unsettled(S7, HEADER .. frame(R8)), nil, "this snapshot's journal")
    eq(j.unsettled(S9, HEADER .. frame(R8)), nil, "an older snapshot's: the snapshot holds all")
    contains(j.unsettled(S7, J9), "continues generation 9, newer than the snapshot's 7")
    contains(j.unsettled(S7, HEADER .. frame(R8):sub(1, 10)), "cut short")
    eq(j.unsettled(nil, J9), nil)
    eq(j.unsettled(S7, nil), nil)
    eq(j.unsettled(S7, "garbage"), nil, "the seed says why it ignores that")
    eq(j.unsettled("{not json", J9), nil)
end)

s.case("a compaction between the two reads is read again", function()
    local j = journal()
    local slept = 0
    local sleep = function() slept = slept + 1 end
    -- The old snapshot, then the sidecar renamed the new snapshot and its journal in.
    local read, seen = reader({ snap = { S7, S9 }, ["snap.journal"] = { J9 } })
    local snap, text, reads, why = j.read_pair(read, "snap", 5, sleep)
    eq(snap, S9)
    eq(text, J9)
    eq(reads, 2)
    eq(why, nil)
    eq(slept, 1)
    eq(seen.snap, 2)
    -- A record being appended: the next read has it whole.
    local torn = HEADER .. frame(R8):sub(1, 12)
    read = reader({ snap = { S7 }, ["snap.journal"] = { torn, HEADER .. frame(R8) } })
    snap, text, reads = j.read_pair(read, "snap", 5, sleep)
    eq(text, HEADER .. frame(R8))
    eq(reads, 2)
    -- A tail torn for good (the sidecar died mid-write): bounded, then used as read.
    slept = 0
    read = reader({ snap = { S7 }, ["snap.journal"] = { torn } })
    snap, text, reads, why = j.read_pair(read, "snap", 5, sleep)
    eq(text, torn)
    eq(reads, 5)
    eq(slept, 4)
    contains(why, "cut short")
    -- No snapshot: the journal is not read.
    read, seen = reader({ ["snap.journal"] = { J9 } })
    snap, text, reads = j.read_pair(read, "snap", 5, sleep)
    eq(snap, nil)
    eq(text, nil)
    eq(reads, 1)
    eq(seen["snap.journal"], nil)
end)

return s
