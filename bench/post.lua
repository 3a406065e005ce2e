-- wrk script for the POST (echo) scenario: every request is a POST with a 10 KB body.
-- The JSON report comes from report.lua in the same directory.

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
dofile(here .. "report.lua")

wrk.method = "POST"
wrk.body = string.rep("p", 10240)
wrk.headers["Content-Type"] = "application/octet-stream"
