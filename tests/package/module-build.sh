#!/bin/bash
# Builds the probe test module and the example module of docs/modules.md the
# way a module author does, against an INSTALLED depth-realtime (its -dev
# package unpacked, or `cmake --install build --prefix DIR`): find_package +
# depth_realtime_add_module, and pkg-config for the flags and module dir. Then
# `depth-realtime -t` loads each (the module signature matches) and the
# example answers its event on a running daemon when node is there.
#
#   tests/package/module-build.sh PREFIX DAEMON WORKDIR
#     PREFIX  the install prefix holding include/ and lib*/cmake/depth-realtime
#     DAEMON  the depth-realtime binary of the same build
# Run by tests/package/run.sh on the packages; by hand on a cmake --install.
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX=$(cd "$1" && pwd)
DAEMON=$2
W=$3
mkdir -p "$W"

PC=$(dirname "$(find "$PREFIX" -path '*/pkgconfig/depth-realtime.pc' | head -1)")
[ -d "$PC" ] || { echo "no depth-realtime.pc under $PREFIX" >&2; exit 1; }
export PKG_CONFIG_PATH=$PC${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
pkg-config --cflags depth-realtime | grep -q -- "-I$PREFIX" || { echo "pkg-config cflags: $(pkg-config --cflags depth-realtime)" >&2; exit 1; }
echo "pkg-config: moduledir=$(pkg-config --variable=moduledir depth-realtime)"

for m in tests/modules/probe:probe docs/example-module:greet; do
  src=${m%%:*}
  name=${m##*:}
  cmake -S "$src" -B "$W/$name" -DCMAKE_PREFIX_PATH="$PREFIX" >"$W/$name.configure.log" 2>&1 ||
    { cat "$W/$name.configure.log" >&2; exit 1; }
  cmake --build "$W/$name" >"$W/$name.build.log" 2>&1 || { cat "$W/$name.build.log" >&2; exit 1; }
  echo "built $W/$name/$name.so with find_package(depth-realtime)"
done

# The same example with nothing but pkg-config and the compiler.
# shellcheck disable=SC2046
g++ -shared -Wall -Wextra $(pkg-config --cflags depth-realtime) $(pkg-config --variable=module_cflags depth-realtime) \
  docs/example-module/greet.cc -o "$W/greet-pc.so"
echo "built $W/greet-pc.so with pkg-config"

cat >"$W/modules.conf" <<CONF
load_module $W/probe/probe.so;
load_module $W/greet/greet.so;
server {
    listen 127.0.0.1:1;
    namespace /;
    probe_greeting "from the package test";
    greet_text "Hi";
}
CONF
"$DAEMON" -t -c "$W/modules.conf"
sed -i "s#$W/greet/greet.so#$W/greet-pc.so#" "$W/modules.conf"
"$DAEMON" -t -c "$W/modules.conf"
echo "depth-realtime -t loads them"

# The example handles its event on a running daemon.
if command -v node >/dev/null && [ -d tests/node_modules/socket.io-client ]; then
  PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  sed -i "s#listen 127.0.0.1:1;#listen 127.0.0.1:$PORT;#" "$W/modules.conf"
  sed -i "1i worker_processes 1;" "$W/modules.conf"
  "$DAEMON" -c "$W/modules.conf" >"$W/daemon.log" 2>&1 &
  pid=$!
  trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
  (cd tests && PORT=$PORT node --input-type=module -e '
    import { io } from "socket.io-client";
    const s = io(`http://127.0.0.1:${process.env.PORT}`, { transports: ["websocket"] });
    const t = setTimeout(() => { console.error("no answer to greet"); process.exit(1); }, 10000);
    s.on("connect", async () => {
      const r = await s.emitWithAck("greet", { name: "package" });
      clearTimeout(t);
      if (r?.data?.text !== "Hi, package") { console.error("greet answered", JSON.stringify(r)); process.exit(1); }
      console.log("greet answered:", r.data.text);
      s.close();
    });') || { cat "$W/daemon.log" >&2; exit 1; }
fi
