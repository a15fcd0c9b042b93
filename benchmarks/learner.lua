-- wrk script: each request picks the next learner's token and item.
-- BENCH_DATA: file of "token item_id" lines; BENCH_MODE: courses | item | progress | batch
-- (batch: BENCH_BATCH reports on the item in one POST /me/progress, as a player catching up)
-- | probe-stack | probe-auth (probe_app.py's routes, sent the progress request)
local mode = os.getenv("BENCH_MODE")
local rows = {}
for line in io.lines(os.getenv("BENCH_DATA")) do
  local token, item = line:match("(%S+) (%S+)")
  rows[#rows + 1] = { token = token, item = item }
end
local counter = 0
local batch = tonumber(os.getenv("BENCH_BATCH") or "20")

request = function()
  counter = counter + 1
  local row = rows[(counter % #rows) + 1]
  local headers = { ["Authorization"] = "Bearer " .. row.token }
  if mode == "courses" then
    return wrk.format("GET", "/api/v1/me/courses", headers)
  elseif mode == "item" then
    return wrk.format("GET", "/api/v1/items/" .. row.item, headers)
  elseif mode == "batch" then
    headers["Content-Type"] = "application/json"
    local reports = {}
    for n = 1, batch do
      reports[n] = '{"item_id": "' .. row.item .. '", "status": "in_progress", "data": {"scroll": '
        .. n / batch .. '}}'
    end
    local body = '{"reports": [' .. table.concat(reports, ", ") .. ']}'
    return wrk.format("POST", "/api/v1/me/progress", headers, body)
  else
    headers["Content-Type"] = "application/json"
    local body = '{"status": "in_progress", "data": {"scroll": ' .. (counter % 100) / 100 .. '}}'
    if mode:sub(1, 6) == "probe-" then
      return wrk.format("PUT", "/probe/" .. mode:sub(7) .. "/" .. row.item, headers, body)
    end
    return wrk.format("PUT", "/api/v1/items/" .. row.item .. "/progress", headers, body)
  end
end
