# Shared by services/install, start, stop and status (sourced, never run on its own).
#
# Layout:
#   cache   ${AEGIS_SERVICES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aegis-services}
#           one folder per installed version (built/unpacked once, then reused by every run and clone)
#   run dir ${AEGIS_SERVICES_RUN_DIR:-services/run}: per service NAME/ (pid, port, env, console.log, data...)
#           plus the env file `env` that the tests read; scripts/test uses a fresh temporary one per run.

FERRETDB_VERSION=v1.24.2 # keep in step with services/ferretdb/go.mod
ELASTICSEARCH_VERSION="${AEGIS_ELASTICSEARCH_VERSION:-8.19.3}"
# Pinned digest of the Maven Central zip for the default version (an override is checked by Maven's sha1 only).
ELASTICSEARCH_SHA256_8_19_3=c4b08b70523700efde9f3e4c9287229f085c2c0db1efca5c6a7d65abbdb9f2e1
ELASTICSEARCH_HEAP="${AEGIS_ELASTICSEARCH_HEAP:-512m}"
START_TIMEOUT="${AEGIS_SERVICES_START_TIMEOUT:-180}" # seconds; a 2-core CI box starts ES in ~10 s
KNOWN_SERVICES="ferretdb elasticsearch"

SERVICES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${AEGIS_SERVICES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aegis-services}"
RUN_DIR="${AEGIS_SERVICES_RUN_DIR:-$SERVICES_DIR/run}"

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

check_names() {
  local n
  [ $# -gt 0 ] || die "name at least one service: $KNOWN_SERVICES"
  for n in "$@"; do
    case " $KNOWN_SERVICES " in *" $n "*) ;; *) die "unknown service '$n' (known: $KNOWN_SERVICES)" ;; esac
  done
}

# Move a finished build into place; if a concurrent install got there first, keep theirs.
publish() { mv -T "$1" "$2" 2>/dev/null || { [ -e "$2" ] && rm -rf "$1"; } || die "cannot create $2"; }

# ---- FerretDB: our small Go program around the embeddable package (see services/ferretdb/main.go) ----

ferretdb_bin() {
  # Keyed by version and by our source, so editing main.go or bumping go.mod rebuilds.
  local key
  key=$(cd "$SERVICES_DIR/ferretdb" && cat main.go go.mod go.sum | sha256sum | cut -c1-12)
  echo "$CACHE_DIR/ferretdb-$FERRETDB_VERSION-$key/aegis-ferretdb"
}

install_ferretdb() {
  local bin tmp t0
  bin=$(ferretdb_bin)
  [ -x "$bin" ] && return 0
  command -v go >/dev/null || die "FerretDB is built with Go, which is not installed"
  log "building FerretDB $FERRETDB_VERSION (first time only: modules from the Go module proxy, then compile)"
  t0=$(now)
  mkdir -p "$CACHE_DIR"
  tmp=$(mktemp -d "$CACHE_DIR/.build-ferretdb.XXXXXX")
  # Pure Go (SQLite is modernc.org/sqlite), so no C compiler; the local toolchain only, go.sum as committed.
  if ! (cd "$SERVICES_DIR/ferretdb" && CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off \
    GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$tmp/aegis-ferretdb" .); then
    rm -rf "$tmp"
    die "building FerretDB failed"
  fi
  publish "$tmp" "$(dirname "$bin")"
  log "built FerretDB in $(since "$t0") -> $bin"
}

start_ferretdb() { # $1: resume (reuse data and port) or fresh
  local d="$RUN_DIR/ferretdb" listen=127.0.0.1:0
  if [ "$1" = resume ] && [ -f "$d/port" ]; then listen="127.0.0.1:$(cat "$d/port")"; else rm -rf "$d"; fi
  mkdir -p "$d/data"
  rm -f "$d/uri" "$d/env"
  launch ferretdb "$(ferretdb_bin)" -dir "$d/data" -listen "$listen" -log "$d/ferretdb.log" -uri-file "$d/uri"
}

wait_ferretdb() { # ready once the program has bound its port and written the URI, and the port accepts
  local d="$RUN_DIR/ferretdb" port
  until [ -s "$d/uri" ]; do pause ferretdb || return 1; done
  port=$(sed -n 's#^mongodb://127\.0\.0\.1:\([0-9]*\)/$#\1#p' "$d/uri")
  [ -n "$port" ] || return 1
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
  echo "$port" >"$d/port"
  echo "AEGIS_TEST_MONGODB_URL=mongodb://127.0.0.1:$port/?directConnection=true" >"$d/env"
}

# ---- Elasticsearch: Maven Central's integ-test zip (a full node with few modules) ----

es_home() { echo "$CACHE_DIR/elasticsearch-$ELASTICSEARCH_VERSION"; }

install_elasticsearch() {
  local home tmp t0 zip want
  home=$(es_home)
  [ -x "$home/bin/elasticsearch" ] && return 0
  command -v mvn >/dev/null || die "Elasticsearch is fetched with Maven (mvn), which is not installed"
  command -v unzip >/dev/null || die "unzip is needed to unpack Elasticsearch"
  log "downloading Elasticsearch $ELASTICSEARCH_VERSION from Maven Central (first time only, ~97 MB)"
  t0=$(now)
  mkdir -p "$CACHE_DIR"
  tmp=$(mktemp -d "$CACHE_DIR/.build-elasticsearch.XXXXXX")
  zip="$tmp/elasticsearch-$ELASTICSEARCH_VERSION.zip"
  # Maven's output is only shown when it fails (its quiet mode still prints colour codes).
  if ! mvn -B -q dependency:copy -DoutputDirectory="$tmp" \
    -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ELASTICSEARCH_VERSION:zip" \
    >"$tmp/mvn.log" 2>&1; then
    cat "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    die "mvn could not fetch Elasticsearch $ELASTICSEARCH_VERSION"
  fi
  want="ELASTICSEARCH_SHA256_${ELASTICSEARCH_VERSION//[^0-9A-Za-z]/_}"
  want=${!want:-}
  if [ -n "$want" ] && ! echo "$want  $zip" | sha256sum -c --status; then
    rm -rf "$tmp"
    die "Elasticsearch zip does not match its pinned sha256"
  fi
  unzip -q "$zip" -d "$tmp" && rm -f "$zip"
  publish "$tmp/elasticsearch-$ELASTICSEARCH_VERSION" "$home"
  rm -rf "$tmp"
  log "installed Elasticsearch in $(since "$t0") -> $home"
}

# The integ-test zip bundles no JDK. 8.x needs Java 17+, 9.x Java 21+: take ES_JAVA_HOME if set, else the
# first JDK (JAVA_HOME, the `java` on PATH, then /usr/lib/jvm/*) that is new enough.
es_java_home() {
  local need=17 j v
  [ "${ELASTICSEARCH_VERSION%%.*}" -ge 9 ] && need=21
  if [ -n "${ES_JAVA_HOME:-}" ]; then echo "$ES_JAVA_HOME"; return 0; fi
  for j in ${JAVA_HOME:-} "$(dirname "$(dirname "$(readlink -f "$(command -v java || echo /nonexistent)")")")" \
    /usr/lib/jvm/*; do
    v=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$j/release" 2>/dev/null)
    if [ -n "$v" ] && [ "$v" -ge "$need" ] && [ -x "$j/bin/java" ]; then echo "$j"; return 0; fi
  done
  die "Elasticsearch $ELASTICSEARCH_VERSION needs Java $need+; none found (set ES_JAVA_HOME)"
}

start_elasticsearch() { # $1: resume (reuse data and HTTP port) or fresh
  local d="$RUN_DIR/elasticsearch" home port=0 java
  home=$(es_home)
  java=$(es_java_home)
  if [ "$1" = resume ] && [ -f "$d/port" ]; then port=$(cat "$d/port"); else rm -rf "$d"; fi
  mkdir -p "$d/data" "$d/logs" "$d/tmp"
  rm -rf "$d/config" "$d/logs/http.ports" "$d/env"
  # Per-run config folder: ES writes its keystore there, and the cached install stays untouched.
  cp -r "$home/config" "$d/config"
  cat >"$d/config/elasticsearch.yml" <<EOF
# Written by services/lib.sh for one test run.
cluster.name: aegis-test
node.name: aegis-test
discovery.type: single-node
xpack.security.enabled: false
network.host: 127.0.0.1
# Port 0 lets the kernel pick free ports (no races between parallel runs); the chosen
# ones are written to logs/http.ports by node.portsfile.
http.port: $port
transport.port: 0
node.portsfile: true
path.data: $d/data
path.logs: $d/logs
# A test node: allow wildcard index deletion, and never go read-only because the disk is fuller than 85%.
action.destructive_requires_name: false
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  printf -- '-Xms%s\n-Xmx%s\n' "$ELASTICSEARCH_HEAP" "$ELASTICSEARCH_HEAP" >"$d/config/jvm.options.d/aegis-heap.options"
  # Elasticsearch refuses to run as root. As root (CI here), run it in a user namespace that maps our uid to
  # 1000: the kernel still sees root's own files, but Elasticsearch sees a normal user. No user is created.
  local asuser=()
  [ "$(id -u)" = 0 ] && asuser=(unshare --map-user=1000 --map-group=1000)
  # ES_JAVA_OPTS is cleared so a developer's own setting cannot change the heap chosen above.
  ES_JAVA_HOME="$java" ES_PATH_CONF="$d/config" ES_TMPDIR="$d/tmp" ES_JAVA_OPTS="" \
    launch elasticsearch "${asuser[@]}" "$home/bin/elasticsearch"
}

wait_elasticsearch() { # ready once the HTTP port is known and cluster health is green or yellow
  local d="$RUN_DIR/elasticsearch" addr port health
  until [ -s "$d/logs/http.ports" ]; do pause elasticsearch || return 1; done
  addr=$(grep -m1 '^127\.0\.0\.1:' "$d/logs/http.ports") || return 1
  port=${addr##*:}
  local left=$((DEADLINE - SECONDS))
  [ "$left" -gt 0 ] || return 1
  health=$(curl -sS --max-time "$((left + 5))" \
    "http://$addr/_cluster/health?wait_for_status=yellow&timeout=${left}s") || return 1
  case "$health" in *'"status":"green"'* | *'"status":"yellow"'*) ;; *) log "health: $health"; return 1 ;; esac
  echo "$port" >"$d/port"
  echo "AEGIS_TEST_ELASTICSEARCH_URL=http://127.0.0.1:$port" >"$d/env"
}

# ---- processes ----
# Each service runs in its own session/process group (setsid), tagged with an environment variable naming
# its run folder, so stop signals exactly the processes this run started (ES is a CLI JVM plus a server JVM).

launch() { # launch NAME COMMAND...
  local name=$1
  shift
  mkdir -p "$RUN_DIR/$name"
  AEGIS_SERVICE_TAG="$RUN_DIR/$name" setsid "$@" >"$RUN_DIR/$name/console.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name/pid"
}

tagged_pids() { # processes of NAME's process group that carry our tag
  local name=$1 pgid p
  pgid=$(cat "$RUN_DIR/$name/pid" 2>/dev/null) || return 0
  for p in $(pgrep -g "$pgid" 2>/dev/null); do
    tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF "AEGIS_SERVICE_TAG=$RUN_DIR/$name" && echo "$p"
  done
  return 0
}

alive() { [ -n "$(tagged_pids "$1")" ]; }

# One step of a readiness wait: fails once NAME has died or the start deadline (DEADLINE, in bash SECONDS) passed.
pause() { alive "$1" && [ "$SECONDS" -lt "$DEADLINE" ] && sleep 0.1; }

stop_service() {
  local name=$1 pids i
  pids=$(tagged_pids "$name")
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 150); do # 15 s for a clean shutdown, then force
      [ -z "$(tagged_pids "$name")" ] && break
      sleep 0.1
    done
    pids=$(tagged_pids "$name")
    [ -z "$pids" ] || { log "$name did not stop in 15 s; killing"; kill -KILL $pids 2>/dev/null || true; }
    log "stopped $name"
  fi
  rm -f "$RUN_DIR/$name/pid"
}

log_tail() { # the last lines of whatever NAME logged, to explain a failed start
  local f
  for f in "$RUN_DIR/$1/console.log" "$RUN_DIR/$1/ferretdb.log" "$RUN_DIR/$1/logs/aegis-test.log"; do
    [ -s "$f" ] || continue
    log "---- last lines of $f ----"
    tail -n 40 "$f" >&2
  done
}

rss_mib() { # resident memory of NAME's processes, MiB
  local p sum=0
  for p in $(tagged_pids "$1"); do sum=$((sum + $(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0))); done
  echo $((sum / 1024))
}
