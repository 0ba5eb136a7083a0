-- Managed by llmhost (pyinfra); edits are overwritten on the next deploy.
-- The gateway's Lua (copied from llmhost/gateway/gateway.lua, loaded with lua-load: one Lua
-- state, shared by HAProxy's threads). Lua, not PCRE: the unit's MemoryDenyWriteExecute stops
-- PCRE's JIT (seen: "regex ... jit compilation failed"), and Lua patterns need none.

-- The log's user (converter lua.llmhost_token): one printable token, at most 64 bytes, of what
-- a shared front end forwards as its signed-in user.
core.register_converters("llmhost_token", function(value)
    return (value:gsub("[^%w@._+-]", "")):sub(1, 64)
end)

-- Token usage per client and model, counted by the gateway from what vLLM answers: the body's
-- "usage" of a whole response, the last chunk's of a stream (the services run with
-- --enable-force-include-usage, so every stream ends with one). A stream whose client did not
-- ask for it (stream_options.include_usage) gets that usage-only chunk taken out again.
-- Served as Prometheus counters by the service llmhost-usage (the metrics frontend's /usage).

local counters = {} -- "client\tmodel" -> {requests, prompt, completion}
-- The end of a response, where its usage is: the last usage of a stream is in its last event.
local TAIL = 4096
local USAGE_EVENT = 'data: {[^\n]-"choices":%s*%[%][^\n]-}\n\n'

-- A JSON boolean that json_query put in a variable: Lua sees it as 1 or 0.
local function yes(value)
    return value == true or value == 1
end

Usage = {id = "llmhost usage", flags = filter.FLT_CFG_FL_HTX}
Usage.__index = Usage

function Usage:new()
    return setmetatable({tail = "", strip = false, counted = false}, Usage)
end

function Usage:start_analyze(txn, chn)
    -- Only answers the gateway routed to a service are counted (txn.service is set then).
    if chn:is_resp() and txn:get_var("txn.service") ~= nil then
        self.strip = yes(txn:get_var("txn.stream")) and not yes(txn:get_var("txn.usage_asked"))
        filter.register_data_filter(self, chn)
    end
end

function Usage:http_payload(txn, msg)
    local data = msg:body(0, msg:input()) or ""
    if not self.strip then
        self.tail = (self.tail .. data):sub(-TAIL)
        return
    end
    -- Only whole events go on, so that the usage-only one is seen whole; the rest waits.
    local whole = 0
    local pos = 1
    while true do
        local _, e = data:find("\n\n", pos, true)
        if not e then
            break
        end
        whole, pos = e, e + 1
    end
    if msg:eom() then
        whole = #data
    end
    local events = data:sub(1, whole)
    self.tail = (self.tail .. events):sub(-TAIL)
    local s, e = events:find(USAGE_EVENT)
    if s then
        msg:remove(s - 1, e - s + 1)
        whole = whole - (e - s + 1)
    end
    if msg:eom() then
        -- Everything left, the end-of-message block included.
        return msg:input()
    end
    return whole
end

function Usage:http_end(txn, msg)
    if not msg.channel:is_resp() or self.counted then
        return
    end
    self.counted = true
    local prompt, completion
    for n in self.tail:gmatch('"prompt_tokens":%s*(%d+)') do
        prompt = tonumber(n)
    end
    for n in self.tail:gmatch('"completion_tokens":%s*(%d+)') do
        completion = tonumber(n)
    end
    if prompt == nil or completion == nil then
        return -- an error answer: no usage
    end
    local key = (txn:get_var("txn.client") or "") .. "\t" .. (txn:get_var("txn.served") or "")
    local c = counters[key] or {0, 0, 0}
    counters[key] = {c[1] + 1, c[2] + prompt, c[3] + completion}
end

core.register_filter("llmhost-usage", Usage, function(flt, args)
    return flt
end)

local METRICS = {
    {"llmhost_gateway_requests_total", "Answered requests that reported usage.", 1},
    {"llmhost_gateway_prompt_tokens_total", "Prompt tokens, as vLLM reported them.", 2},
    {"llmhost_gateway_completion_tokens_total", "Completion tokens, as vLLM reported them.", 3},
}

local function label(value)
    return (value:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n"))
end

core.register_service("llmhost-usage", "http", function(applet)
    local out = {}
    for _, m in ipairs(METRICS) do
        out[#out + 1] = "# HELP " .. m[1] .. " " .. m[2]
        out[#out + 1] = "# TYPE " .. m[1] .. " counter"
        for key, c in pairs(counters) do
            local client, model = key:match("^(.-)\t(.*)$")
            out[#out + 1] = string.format('%s{client="%s",model="%s"} %d', m[1], label(client),
                label(model), c[m[3]])
        end
    end
    local body = table.concat(out, "\n") .. "\n"
    applet:set_status(200)
    applet:add_header("content-type", "text/plain; version=0.0.4")
    applet:add_header("content-length", string.len(body))
    applet:start_response()
    applet:send(body)
end)
