#!/bin/sh
# Fetch the diskferry-agent binary the coordinator published, with the VM's
# managed identity (no key, no SAS), and refuse it unless its SHA-256 is the
# one the coordinator put in the user data. The token is never printed.
set -eu
URL='@AGENT_URL@'
SHA256='@AGENT_SHA256@'
CLIENT_ID='@IDENTITY_CLIENT_ID@'
IMDS="http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F&client_id=$CLIENT_ID"
TOKEN=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
  TOKEN=$(curl -sf -H Metadata:true "$IMDS" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p') || true
  [ -n "$TOKEN" ] && break
  sleep 3
done
[ -n "$TOKEN" ] || { echo "diskferry: no managed identity token from IMDS" >&2; exit 1; }
BIN=/usr/local/bin/diskferry-agent
curl -sf --retry 5 -H "Authorization: Bearer $TOKEN" -H "x-ms-version: 2021-08-06" -o "$BIN.part" "$URL"
echo "$SHA256  $BIN.part" | sha256sum -c - >/dev/null || { echo "diskferry: agent digest mismatch" >&2; rm -f "$BIN.part"; exit 1; }
chmod 0755 "$BIN.part"
mv "$BIN.part" "$BIN"
