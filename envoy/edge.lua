-- paymesh's edge checks: an Envoy Lua filter that runs before the gRPC-JSON transcoder.
-- ROUTES and MESSAGES (above, in build/edge.lua) are generated from the protos by
-- tools/gen_edge_lua.py; this file is the logic. For every request, in this order:
--   1. card numbers (12-19 digits with single spaces or dashes, passing Luhn) in the path,
--      X-Request-Id and User-Agent are masked to their last 4 digits, so that no access log
--      line or reply has one;
--   2. /v1/ without an API key is 401, before anything else is looked at;
--   3. a known path with another method is 405 (an unknown path stays the transcoder's 404);
--   4. path variables, query parameters and the JSON body must fit the request message:
--      an unknown field, a value of another JSON type (true/false, numbers as numbers, no
--      nulls; a 64-bit integer also as the string of digits that answers print it as),
--      broken UTF-8, a control character or a field given twice (in the body or the query)
--      is a 400 naming the field. The transcoder would drop unknown fields, coerce values
--      and keep the last of two silently.
-- Replies use the common error envelope (google.rpc.Status as JSON, as the services').

local DOMAIN = "paymesh.dev"
local MAX_DEPTH = 32
local MAX_VIOLATIONS = 20
local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
local INTEGER_DIGITS = { int32 = 10, uint32 = 10, int64 = 19, uint64 = 20 }
local INTEGER_MAX = {
  int32 = "2147483647", uint32 = "4294967295",
  int64 = "9223372036854775807", uint64 = "18446744073709551615",
}
local JSON_TYPES = {
  string = "a string", enum = "a string", bool = "true or false", number = "a number",
  int32 = "an integer", uint32 = "an integer", int64 = "an integer or a string of digits",
  uint64 = "an integer or a string of digits",
  message = "an object", map = "an object of strings", list = "an array",
}
-- Answers write these as strings (proto3 JSON): a request may send them back that way.
local QUOTED_INTEGERS = { int64 = true, uint64 = true }

-- Card numbers ---------------------------------------------------------------------------

local function luhn_valid(digits)
  local sum, double = 0, false
  for i = #digits, 1, -1 do
    local d = digits:byte(i) - 48
    if double then
      d = d * 2
      if d > 9 then d = d - 9 end
    end
    sum = sum + d
    double = not double
  end
  return sum % 10 == 0
end

local function mask_card_number(run)
  if run:find("[ %-][ %-]") then return nil end
  local digits = run:gsub("[ %-]", "")
  -- No card number starts with 0 or repeats one digit: "000000000000" is padding.
  if #digits < 12 or #digits > 19 or digits:sub(1, 1) == "0" or not digits:find("[^" .. digits:sub(1, 1) .. "]")
      or not luhn_valid(digits) then
    return nil
  end
  return string.rep("*", #digits - 4) .. digits:sub(-4)
end

-- Full-width and Arabic-Indic digits (UTF-8), which a card number may be written in.
local WIDE_DIGITS = {
  { "\239\188([\144-\153])", 144 }, -- U+FF10..FF19
  { "\217([\160-\169])", 160 }, -- U+0660..0669
  { "\219([\176-\185])", 176 }, -- U+06F0..06F9
}

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- `text` with every card number masked, however it is written: percent-encoded, grouped, in
-- full-width digits. Text without one is returned as it is; text with one comes back
-- decoded, masked and encoded again.
local function mask_card_numbers(text)
  if not text:find("%d%d") and not text:find("[\128-\255]") then return text end
  local plain = percent_decode(text)
  for _, wide in ipairs(WIDE_DIGITS) do
    plain = plain:gsub(wide[1], function(byte) return string.char(48 + byte:byte() - wide[2]) end)
  end
  local masked = plain:gsub("%d[%d %-]*%d", mask_card_number)
  if masked == plain then return text end
  return (masked:gsub("[^%w%-%._~/%?&=*:@!$'()+,;]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- Text -----------------------------------------------------------------------------------

local function continuation(byte) return byte and byte >= 0x80 and byte <= 0xBF end

-- UTF-8 without control characters other than tab, line feed and carriage return.
local function valid_text(s)
  if s:find("[%z\1-\8\11\12\14-\31\127]") then return false end
  if not s:find("[\128-\255]") then return true end
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    if c < 0x80 then
      i = i + 1
    else
      local c2, c3, c4 = s:byte(i + 1, i + 3)
      local cont = continuation
      if c >= 0xC2 and c <= 0xDF and cont(c2) then
        i = i + 2
      elseif c >= 0xE0 and c <= 0xEF and cont(c2) and cont(c3)
          and not (c == 0xE0 and c2 < 0xA0) and not (c == 0xED and c2 > 0x9F) then
        i = i + 3
      elseif c >= 0xF0 and c <= 0xF4 and cont(c2) and cont(c3) and cont(c4)
          and not (c == 0xF0 and c2 < 0x90) and not (c == 0xF4 and c2 > 0x8F) then
        i = i + 4
      else
        return false
      end
    end
  end
  return true
end

local function utf8_char(cp)
  local floor = math.floor
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64,
    0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

-- A field name as it may appear in a reply: never a card number, never a novel.
local function shown(name)
  if #name > 100 then name = name:sub(1, 100) .. "…" end
  if not valid_text(name) then name = "(a name that is not UTF-8 text)" end
  return mask_card_numbers(name)
end

-- Replies --------------------------------------------------------------------------------

local function reply(handle, status, code, reason, message, violations, extra_headers)
  local details = {
    '{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":' .. json_string(reason)
      .. ',"domain":"' .. DOMAIN .. '","metadata":{}}',
    '{"@type":"type.googleapis.com/google.rpc.RequestInfo","request_id":'
      .. json_string(handle:headers():get("x-request-id") or "") .. '}',
  }
  if violations and #violations > 0 then
    local items = {}
    for _, v in ipairs(violations) do
      items[#items + 1] = '{"field":' .. json_string(v.field) .. ',"description":'
        .. json_string(v.description) .. ',"reason":' .. json_string(v.reason) .. '}'
    end
    details[#details + 1] = '{"@type":"type.googleapis.com/google.rpc.BadRequest",'
      .. '"field_violations":[' .. table.concat(items, ",") .. ']}'
  end
  local body = '{"code":' .. code .. ',"message":' .. json_string(message)
    .. ',"details":[' .. table.concat(details, ",") .. ']}'
  local headers = { [":status"] = tostring(status), ["content-type"] = "application/json" }
  for name, value in pairs(extra_headers or {}) do headers[name] = value end
  -- Tells local_reply_config that this body is already the envelope.
  handle:headers():replace("x-paymesh-edge-reply", "1")
  handle:respond(headers, body)
end

local function refuse_fields(handle, violations)
  local message = violations[1].description
  if #violations > 1 then
    local fields = {}
    for _, v in ipairs(violations) do fields[#fields + 1] = v.field end
    message = "invalid request: " .. table.concat(fields, ", ")
  end
  reply(handle, 400, 3, violations[1].reason, message, violations)
end

-- JSON, checked against the request message while it is read -----------------------------

local Checker = {}
Checker.__index = Checker

local function syntax_error(message) error({ syntax = message }, 0) end

function Checker.new(text)
  -- in_query: the fields that the query string gave, which the body may not give again.
  return setmetatable({ s = text, i = 1, violations = {}, in_query = {} }, Checker)
end

function Checker:violation(field, reason, description)
  if #self.violations < MAX_VIOLATIONS then
    self.violations[#self.violations + 1] = {
      field = shown(field), reason = reason, description = mask_card_numbers(description),
    }
  end
end

function Checker:peek()
  self.i = self.s:find("[^ \t\r\n]", self.i) or (#self.s + 1)
  return self.s:sub(self.i, self.i)
end

function Checker:expect(char)
  if self:peek() ~= char then syntax_error("expected '" .. char .. "'") end
  self.i = self.i + 1
end

function Checker:string()
  local s, j, parts = self.s, self.i + 1, {}
  while true do
    local k = s:find('["\\%c]', j)
    if not k then syntax_error("unterminated string") end
    local c = s:byte(k)
    parts[#parts + 1] = s:sub(j, k - 1)
    if c == 34 then
      self.i = k + 1
      return table.concat(parts)
    elseif c ~= 92 then
      syntax_error("control character in a string")
    end
    local escape = s:sub(k + 1, k + 1)
    if escape == "u" then
      local cp = tonumber(s:match("^%x%x%x%x", k + 2) or "", 16)
      if not cp then syntax_error("bad \\u escape") end
      j = k + 6
      local low = cp >= 0xD800 and cp <= 0xDBFF and tonumber(s:match("^\\u(%x%x%x%x)", j) or "", 16)
      if low and low >= 0xDC00 and low <= 0xDFFF then
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
        j = j + 6
      end
      -- A lone surrogate becomes bytes that valid_text refuses.
      parts[#parts + 1] = utf8_char(cp)
    elseif ESCAPES[escape] then
      parts[#parts + 1] = ESCAPES[escape]
      j = k + 2
    else
      syntax_error("bad escape")
    end
  end
end

-- A JSON number: its integer part and whether it has no fraction or exponent.
function Checker:number()
  local s, i = self.s, self.i
  local int = s:match("^-?%d+", i)
  if not int or int:match("^-?0%d") then syntax_error("bad number") end
  local j = i + #int
  local fraction = s:match("^%.%d+", j)
  if fraction then j = j + #fraction end
  local exponent = s:match("^[eE][-+]?%d+", j)
  if exponent then j = j + #exponent end
  self.i = j
  return int, not fraction and not exponent
end

local function integer_fits(kind, int)
  local negative = int:sub(1, 1) == "-"
  local digits = negative and int:sub(2) or int
  if negative and kind:sub(1, 1) == "u" then return false end
  local max = INTEGER_MAX[kind]
  if #digits ~= #max then return #digits < #max end
  return digits <= max
end

local function is_one_of(value, values)
  for _, candidate in ipairs(values) do
    if candidate == value then return true end
  end
  return false
end

local function expected(kind)
  return "must be " .. JSON_TYPES[kind.t]
end

-- An integer as JSON writes it: no sign but a minus, no leading zero, no fraction.
local function integer_text(text)
  return text:match("^-?%d+$") ~= nil and not text:match("^-?0%d")
end

function Checker:integer(field, kind, int)
  if not integer_fits(kind.t, int) then
    self:violation(field, "invalid_integer", field .. " must be a whole number within the "
      .. kind.t .. " range")
  end
end

function Checker:wrong_type(field, kind)
  if field == "" then field = "body" end -- the body itself, e.g. an array instead of an object
  self:violation(field, "invalid_type", shown(field) .. " " .. expected(kind))
end

-- Reads one value. `kind` is the schema entry expected there; nil reads it unchecked.
function Checker:value(kind, field, depth)
  if depth > MAX_DEPTH then syntax_error("nested too deep") end
  local c = self:peek()
  if c == "{" then
    if kind and kind.t ~= "message" and kind.t ~= "map" then
      self:wrong_type(field, kind)
      kind = nil
    end
    self:object(kind, field, depth)
  elseif c == "[" then
    if kind and kind.t ~= "list" then
      self:wrong_type(field, kind)
      kind = nil
    end
    self:array(kind and kind.v, field, depth)
  elseif c == '"' then
    local text = self:string()
    if not kind then return end
    if kind.t == "string" or kind.t == "enum" then
      if not valid_text(text) then
        self:violation(field, "invalid_characters",
          field .. " must be UTF-8 text without control characters")
      elseif kind.t == "enum" and not is_one_of(text, kind.values) then
        self:violation(field, "invalid_value", field .. " must be one of " .. table.concat(kind.values, ", "))
      end
    elseif QUOTED_INTEGERS[kind.t] then
      if integer_text(text) then
        self:integer(field, kind, text)
      else
        self:violation(field, "invalid_integer", field .. " must be a whole number written in digits")
      end
    else
      self:wrong_type(field, kind)
    end
  elseif c == "t" or c == "f" or c == "n" then
    local word = self.s:match("^true", self.i) or self.s:match("^false", self.i)
      or self.s:match("^null", self.i)
    if not word then syntax_error("unexpected word") end
    self.i = self.i + #word
    if kind and (word == "null" or kind.t ~= "bool") then
      self:wrong_type(field, kind)
    end
  elseif c == "-" or c:match("%d") then
    local int, integral = self:number()
    if not kind or kind.t == "number" then return end
    if not INTEGER_DIGITS[kind.t] then
      self:wrong_type(field, kind)
    elseif not integral then
      self:violation(field, "invalid_integer", field .. " must be a whole number within the "
        .. kind.t .. " range")
    else
      self:integer(field, kind, int)
    end
  elseif c == "" then
    syntax_error("unexpected end")
  else
    syntax_error("unexpected character")
  end
end

function Checker:array(element, field, depth)
  self.i = self.i + 1
  if self:peek() == "]" then
    self.i = self.i + 1
    return
  end
  local n = 0
  while true do
    self:value(element, field .. "[" .. n .. "]", depth + 1)
    n = n + 1
    local separator = self:peek()
    self.i = self.i + 1
    if separator == "]" then return end
    if separator ~= "," then syntax_error("expected ',' or ']'") end
  end
end

function Checker:object(kind, field, depth)
  self.i = self.i + 1
  if self:peek() == "}" then
    self.i = self.i + 1
    return
  end
  local seen = {}
  while true do
    if self:peek() ~= '"' then syntax_error("expected a field name") end
    local name = self:string()
    self:expect(":")
    local path = field == "" and name or field .. "." .. name
    local child = nil
    if seen[name] or (field == "" and self.in_query[name]) then
      self:violation(path, "duplicate_parameter", shown(path) .. " is given twice")
    elseif kind and kind.t == "map" then
      child = kind.v
      if not valid_text(name) then
        self:violation(path, "invalid_characters", "keys of " .. field .. " must be UTF-8 text")
      end
    elseif kind then
      child = MESSAGES[kind.m][name]
      if not child or (kind.excluded and kind.excluded[name]) then
        child = nil
        self:violation(path, "unknown_parameter", "Received unknown parameter: " .. shown(path))
      end
    end
    seen[name] = true
    self:value(child, path, depth + 1)
    local separator = self:peek()
    self.i = self.i + 1
    if separator == "}" then return end
    if separator ~= "," then syntax_error("expected ',' or '}'") end
  end
end

-- Routes ---------------------------------------------------------------------------------

-- The route for `path` and `method`, the values of its path variables, and the methods
-- that the path takes (to answer 405).
local function find_route(path, method)
  local methods = {}
  for _, route in ipairs(ROUTES) do
    local values = { path:match(route.pattern) }
    if values[1] ~= nil then
      if route.method == method then
        if #route.params == 0 then values = {} end
        return route, values, nil
      end
      methods[#methods + 1] = route.method
    end
  end
  return nil, nil, methods
end

local function field_kind(message, dotted)
  local kind = { t = "message", m = message }
  for part in dotted:gmatch("[^.]+") do
    if kind.t ~= "message" then return nil end
    kind = MESSAGES[kind.m][part]
    if not kind then return nil end
  end
  return kind
end

local function check_scalar(checker, kind, name, value)
  if not valid_text(value) then
    checker:violation(name, "invalid_characters", name .. " must be UTF-8 text without control characters")
  elseif INTEGER_DIGITS[kind.t] then
    if not value:match("^-?%d+$") or not integer_fits(kind.t, value) then
      checker:violation(name, "invalid_integer", name .. " must be a whole number")
    end
  elseif kind.t == "bool" and value ~= "true" and value ~= "false" then
    checker:violation(name, "invalid_type", name .. " must be true or false")
  elseif kind.t == "message" or kind.t == "map" then
    checker:violation(name, "invalid_type", name .. " " .. expected(kind))
  end
end

-- Every list's page size is 1 to 100. proto3 cannot tell `limit=0` from no limit, so the
-- service would read it as unset (10): it is refused here, where it was given.
local PAGE_LIMIT_MIN, PAGE_LIMIT_MAX = 1, 100

local function check_page_limit(checker, limit)
  if limit < PAGE_LIMIT_MIN or limit > PAGE_LIMIT_MAX then
    checker:violation("limit", "invalid_limit",
      "limit must be " .. PAGE_LIMIT_MIN .. " to " .. PAGE_LIMIT_MAX)
  end
end

local function check_request(handle, route, values, query)
  local checker = Checker.new("")
  local from_path = {}
  for n, name in ipairs(route.params) do
    from_path[name] = true
    if not valid_text(percent_decode(values[n])) then
      checker:violation(name, "invalid_characters", name .. " must be UTF-8 text without control characters")
    end
  end
  local seen = {}
  for pair in query:gmatch("[^&]+") do
    local name, value = pair:match("^([^=]*)=?(.*)$")
    name = percent_decode(name)
    local kind = field_kind(route.message, name)
    if not kind or from_path[name] or name == "" then
      checker:violation(name, "unknown_parameter", "Received unknown parameter: " .. shown(name))
    elseif seen[name] and kind.t ~= "list" then
      -- The transcoder would keep the last one silently; a repeated field takes one per value.
      checker:violation(name, "duplicate_parameter", shown(name) .. " is given twice")
    else
      seen[name] = true
      local before = #checker.violations
      check_scalar(checker, kind.t == "list" and kind.v or kind, name, percent_decode(value))
      if name == "limit" and #checker.violations == before then
        check_page_limit(checker, tonumber(percent_decode(value)))
      end
    end
  end
  if route.body ~= "" and not route.raw_body then
    local body = handle:body()
    local text = body and body:getBytes(0, body:length()) or ""
    if text:find("[^ \t\r\n]") then
      local kind = { t = "message", m = route.message, excluded = from_path }
      local field = ""
      if route.body ~= "*" then
        kind, field = MESSAGES[route.message][route.body], route.body
      end
      checker.s = text
      checker.in_query = seen
      local ok, failure = pcall(function()
        checker:value(kind, field, 0)
        if checker:peek() ~= "" then syntax_error("text after the JSON value") end
      end)
      if not ok then
        if type(failure) ~= "table" then error(failure, 0) end
        reply(handle, 400, 3, "invalid_json", "the request body is not valid JSON: " .. failure.syntax
          .. " at byte " .. checker.i, nil)
        return false
      end
    end
  end
  if #checker.violations > 0 then
    refuse_fields(handle, checker.violations)
    return false
  end
  return true
end

-- What a request without an Idempotency-Key is told when its service does not answer (a
-- crash, a timeout): Envoy's local reply (envoy.yaml) reads these headers. The answer to a
-- request with a key advises a retry under it; one without a key cannot be retried safely,
-- so it says what is true instead: the object it was on and where its outcome will show.
local KEYLESS_HEADERS = { "x-paymesh-keyless-advice", "x-paymesh-keyless-payment-intent" }

local function mark_keyless(handle, route, values, path)
  -- Fetched again: a header map taken before the body was read is out of scope after it.
  local headers = handle:headers()
  if route.method == "GET" or route.raw_body or (headers:get("idempotency-key") or "") ~= "" then
    return
  end
  local object_id
  for n, name in ipairs(route.params) do
    if name == "id" then object_id = values[n] end
  end
  if not object_id then
    headers:replace("x-paymesh-keyless-advice",
      "this request may or may not have taken effect, and sending it again may do it twice.")
    return
  end
  local object_path = path:match("^/v1/[^/]+/[^/]+")
  headers:replace("x-paymesh-keyless-advice", "this request on " .. object_id
    .. " may or may not have taken effect. Its outcome will arrive as an event and on GET "
    .. object_path .. ".")
  if object_path:sub(1, 20) == "/v1/payment_intents/" then
    headers:replace("x-paymesh-keyless-payment-intent", object_id)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local raw_path = headers:get(":path") or "/"
  local masked = mask_card_numbers(raw_path)
  if masked ~= raw_path then headers:replace(":path", masked) end
  -- The headers that the access log writes down.
  for _, name in ipairs({ "x-request-id", "user-agent" }) do
    local value = headers:get(name)
    if value and mask_card_numbers(value) ~= value then
      headers:replace(name, mask_card_numbers(value))
    end
  end
  headers:remove("x-paymesh-edge-reply")
  for _, name in ipairs(KEYLESS_HEADERS) do headers:remove(name) end
  -- HTTP allows header names that gRPC metadata does not (`~`, `#`, …): a service would
  -- refuse the whole call. They cannot be meant for us, so they are dropped.
  local unfit = {}
  for name, _ in pairs(headers) do
    if name:sub(1, 1) ~= ":" and name:find("[^0-9a-z_%.%-]") then unfit[#unfit + 1] = name end
  end
  for _, name in ipairs(unfit) do headers:remove(name) end

  local path, query = masked:match("^([^?]*)%??(.*)$")
  if path:sub(1, 4) ~= "/v1/" then return end
  if path:sub(1, 8) ~= "/v1/psp/" and (headers:get("authorization") or "") == "" then
    reply(handle, 401, 16, "missing_api_key", "no API key: send `Authorization: Bearer sk_test_…`")
    return
  end
  local route, values, methods = find_route(path, headers:get(":method"))
  if not route then
    if #methods > 0 then
      table.sort(methods)
      local allow = table.concat(methods, ", ")
      reply(handle, 405, 12, "method_not_allowed",
        headers:get(":method") .. " is not allowed here: use " .. allow, nil, { allow = allow })
    end
    return
  end
  if check_request(handle, route, values, query) then mark_keyless(handle, route, values, path) end
end
