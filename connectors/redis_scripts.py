"""The Lua scripts of the Redis online store: the event-time monotonic upsert, on one node (keys
declared, one ``MGET``/``MSET``) and on a cluster node (keys of many slots, ``GET``/``SET`` per key), and
the cluster's one-command read of a node's keys.

A stored row that is not sound (``sound``: the checks of ``online_codec.row_problem`` in the same
order) counts as absent, so a damaged row never blocks a write.
"""

from __future__ import annotations

from connectors import online_codec as codec

# Whether a stored row is sound, and the (event_ts, created_ts) comparison of a new row with it.
_SOUND = """
local WIDTH = {%(widths)s}
local sizes = {}  -- schema section -> {bytes up to the blobs, offsets of the blob lengths}, or false

local function sizes_of(schema)
    local size, count, var_at, pos, n = 0, 0, {}, 1, #schema
    while pos <= n do
        if pos + 2 > n then return false end
        local code, length = struct.unpack('>BH', schema, pos)
        pos = pos + 3 + length
        if pos > n + 1 then return false end
        local width = WIDTH[code]
        if width == nil then return false end
        count = count + 1
        if width < 0 then
            var_at[#var_at + 1] = size
            width = 4
        end
        size = size + width
    end
    local nb = math.floor((count + 7) / 8)
    for j = 1, #var_at do var_at[j] = var_at[j] + nb end
    return {nb + size, var_at}
end

local last_schema, last_found = '', sizes_of('')  -- the previous stored row's schema and its sizes

-- Whether a stored row of n bytes, whose header (past its format byte) is e1..slen, is sound. A time
-- is (hi, lo): its signed high and unsigned low 32 bits, compared with the range's.
local function sound(row, n, e1, e2, c1, c2, slen)
    if e1 < %(min_hi)d or (e1 == %(min_hi)d and e2 < %(min_lo)d)
            or e1 > %(end_hi)d or (e1 == %(end_hi)d and e2 >= %(end_lo)d) then
        return false
    end
    if (c1 ~= -2147483648 or c2 ~= 0) and (c1 < %(min_hi)d or (c1 == %(min_hi)d and c2 < %(min_lo)d)
            or c1 > %(end_hi)d or (c1 == %(end_hi)d and c2 >= %(end_lo)d)) then
        return false
    end
    if %(header)d + slen > n then return false end
    local found
    -- Rows of one call mostly share a schema: compared in place, without copying it out of the row.
    if slen == #last_schema and string.find(row, last_schema, %(header)d + 1, true) == %(header)d + 1 then
        found = last_found
    else
        local schema = string.sub(row, %(header)d + 1, %(header)d + slen)
        found = sizes[schema]
        if found == nil then
            found = sizes_of(schema)
            sizes[schema] = found
        end
        last_schema, last_found = schema, found
    end
    if not found then return false end
    local start = %(header)d + slen
    local need = start + found[1]
    if need > n then return false end
    local var_at = found[2]
    for j = 1, #var_at do
        need = need + struct.unpack('<I4', row, start + var_at[j] + 1)
    end
    return need == n
end

-- Whether ``row`` is strictly newer than the stored row ``old`` (nil/false: none).
local function newer(row, old)
    if old and #old >= %(header)d and string.byte(old, 1) == %(format)d then
        local b1, b2, b3, b4, slen = struct.unpack('>i4I4i4I4H', old, 2)
        if sound(old, #old, b1, b2, b3, b4, slen) then
            local a1, a2, a3, a4 = struct.unpack('>i4I4i4I4', row, 2)
            if a1 ~= b1 then return a1 > b1
            elseif a2 ~= b2 then return a2 > b2
            elseif a3 ~= b3 then return a3 > b3
            else return a4 > b4 end
        end
    end
    return true
end
"""

_VALUES = {"format": codec.FORMAT, "header": codec.HEADER_SIZE,
           "widths": ", ".join(f"[{code}] = {width}" for code, width in sorted(codec.FIXED_SECTION_WIDTH.items())),
           "min_hi": codec.ROW_TS_MIN_US >> 32, "min_lo": codec.ROW_TS_MIN_US & 0xFFFFFFFF,
           "end_hi": codec.ROW_TS_END_US >> 32, "end_lo": codec.ROW_TS_END_US & 0xFFFFFFFF}

# One node. KEYS: the Redis keys. ARGV[1]: '1' when every row is followed by its expiry (unix ms),
# else '0'; then per key: row [, pxat]. Returns how many rows were stored.
UPSERT_LUA = (_SOUND % _VALUES) + """
local with_ttl = ARGV[1] == '1'
local stride = with_ttl and 2 or 1
local stored = redis.call('MGET', unpack(KEYS))
local written = 0
local mset = {}
for i = 1, #KEYS do
    local at = 2 + (i - 1) * stride
    if newer(ARGV[at], stored[i]) then
        written = written + 1
        if with_ttl then
            redis.call('SET', KEYS[i], ARGV[at], 'PXAT', ARGV[at + 1])
        else
            mset[#mset + 1] = KEYS[i]
            mset[#mset + 1] = ARGV[at]
        end
    end
end
if #mset > 0 then redis.call('MSET', unpack(mset)) end
return written
"""

# A cluster node: the keys of many slots served by this node, in one call (Redis >= 7). The keys are
# not declared (a declared key list must be of one slot), so they come in ARGV: ARGV[1] as above,
# ARGV[2] = n, ARGV[3..n+2] the keys, then per key: row [, pxat]. Every key is read before anything
# is written: a key this node does not serve (its slot moved, or is migrating and the key left) makes
# the call answer ``FSREDIRECT`` with nothing written, and the caller routes those rows key by key.
CLUSTER_UPSERT_LUA = "#!lua flags=allow-cross-slot-keys\n" + (_SOUND % _VALUES) + """
local with_ttl = ARGV[1] == '1'
local stride = with_ttl and 2 or 1
local n = tonumber(ARGV[2])
local stored = {}
for i = 1, n do
    local old = redis.pcall('GET', ARGV[2 + i])
    if type(old) == 'table' then
        if string.sub(old.err, 1, 9) ~= 'WRONGTYPE' then
            return redis.error_reply('FSREDIRECT ' .. ARGV[2 + i] .. ': ' .. old.err)
        end
        old = false  -- a key of another type is replaced, as MGET reads it as nil on one node
    end
    stored[i] = old
end
local written = 0
for i = 1, n do
    local at = 3 + n + (i - 1) * stride
    if newer(ARGV[at], stored[i]) then
        written = written + 1
        if with_ttl then
            redis.call('SET', ARGV[2 + i], ARGV[at], 'PXAT', ARGV[at + 1])
        else
            redis.call('SET', ARGV[2 + i], ARGV[at])
        end
    end
end
return written
"""

# A cluster node (or its replica, after READONLY): the values of keys of any slots this node serves,
# one MGET per slot. ARGV[1] = g, the number of slots; ARGV[2..g+1] how many keys of each slot follow,
# in order; then the keys. Returns ``{values, failed}``: ``failed`` lists (1-based) the keys of slots
# the node does not serve (moved, or migrating with keys gone: their values read as nil here); the
# caller reads those key by key, following redirects.
CLUSTER_READ_LUA = """#!lua flags=no-writes,allow-cross-slot-keys
local values, failed = {}, {}
local groups = tonumber(ARGV[1])
local at = groups + 2
for g = 1, groups do
    local n = tonumber(ARGV[1 + g])
    local got = redis.pcall('MGET', unpack(ARGV, at, at + n - 1))
    local base = at - groups - 2
    if got.err then
        for i = 1, n do
            values[base + i] = false
            failed[#failed + 1] = base + i
        end
    else
        for i = 1, n do values[base + i] = got[i] end
    end
    at = at + n
end
return {values, failed}
"""
