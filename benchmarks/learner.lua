-- wrk script: each request picks the next learner's token and item.
-- BENCH_DATA: file of "token item_id" lines; BENCH_MODE: courses | item | progress
local mode = os.getenv("BENCH_MODE")
local rows = {}
for line in io.lines(os.getenv("BENCH_DATA")) do
  local token, item = line:match("(%S+) (%S+)")
  rows[#rows + 1] = { token = token, item = item }
end
local counter = 0

request = function()
  counter = counter + 1
  local row = rows[(counter % #rows) + 1]
  local headers = { ["Authorization"] = "Bearer " .. row.token }
  if mode == "courses" then
    return wrk.format("GET", "/api/v1/me/courses", headers)
  elseif mode == "item" then
    return wrk.format("GET", "/api/v1/items/" .. row.item, headers)
  else
    headers["Content-Type"] = "application/json"
    local body = '{"status": "in_progress", "data": {"scroll": ' .. (counter % 100) / 100 .. '}}'
    return wrk.format("PUT", "/api/v1/items/" .. row.item .. "/progress", headers, body)
  end
end
