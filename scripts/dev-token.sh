#!/bin/sh
# `make token`: prints an HS256 JWT for development, signed with JWT_SECRET
# (the Makefile exports the secret `make run` uses). Claims as the shipped conf
# reads them (module auth_jwt): userId, role, and the access claims
# conversations / projects (arrays of ids the user may act in); exp in a day.
#   scripts/dev-token.sh USER [ROLE] [CONVERSATIONS] [PROJECTS]   (lists: a,b,c)
# Signs with openssl (scripts/deps.sh run installs it), or with node if openssl is absent.
set -e
user=$1 role=$2 conversations=$3 projects=$4
if [ -z "$user" ]; then
  echo "usage: make token USER=<id> [ROLE=admin] [CONVERSATIONS=a,b] [PROJECTS=p]" >&2
  exit 2
fi
: "${JWT_SECRET:?JWT_SECRET is not set (make token sets the one make run uses)}"

# A JSON string: backslashes and quotes escaped; control characters refused.
json_str() {
  if printf '%s' "$1" | LC_ALL=C grep -q '[[:cntrl:]]'; then
    echo "dev-token: control characters in \"$1\"" >&2
    exit 2
  fi
  printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}
# a,b,c -> ["a","b","c"]
json_list() {
  out= sep=
  old_ifs=$IFS; IFS=,
  for item in $1; do
    [ -n "$item" ] || continue
    out="$out$sep$(json_str "$item")"; sep=,
  done
  IFS=$old_ifs
  printf '[%s]' "$out"
}

now=$(date +%s)
payload="{\"userId\":$(json_str "$user")"
[ -z "$role" ] || payload="$payload,\"role\":$(json_str "$role")"
[ -z "$conversations" ] || payload="$payload,\"conversations\":$(json_list "$conversations")"
[ -z "$projects" ] || payload="$payload,\"projects\":$(json_list "$projects")"
payload="$payload,\"iat\":$now,\"exp\":$((now + 86400))}"
header='{"alg":"HS256","typ":"JWT"}'

if command -v openssl >/dev/null 2>&1; then
  b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  signing_input="$(printf '%s' "$header" | b64url).$(printf '%s' "$payload" | b64url)"
  sig=$(printf '%s' "$signing_input" | openssl dgst -sha256 -hmac "$JWT_SECRET" -binary | b64url)
  echo "$signing_input.$sig"
elif command -v node >/dev/null 2>&1; then
  HEADER=$header PAYLOAD=$payload node -e '
    const c = require("node:crypto"), e = process.env;
    const b = (s) => Buffer.from(s).toString("base64url");
    const input = b(e.HEADER) + "." + b(e.PAYLOAD);
    console.log(input + "." + c.createHmac("sha256", e.JWT_SECRET).update(input).digest("base64url"));'
else
  echo "dev-token: needs openssl or node (scripts/deps.sh run installs openssl)" >&2
  exit 1
fi
