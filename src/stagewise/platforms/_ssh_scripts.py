"""The POSIX sh scripts the ssh platform runs on hosts, and the readers of what they print.

Hosts are agentless: they need sshd, a POSIX shell, coreutils-level tools
(`cat`, `mkdir`, `mv`, `rm`, `tar`, `gzip`, `sha256sum`, `df`, `date`, `od`,
`sleep`, `setsid`, `tr`, `tail`) and the release's own program. Everything
stagewise knows of a host lives there, under `<root>/<service>/`:

    releases/<version>/            a release, unpacked; `.stagewise-artifact` holds its hash
    instances/<id>.rec             one line: id seq release port token pid start created
    instances/<id>.stopping        stop() is stopping it: its exit is no failure
    logs/<id>.log                  the instance's output

Each script is a fixed text: the values it works on arrive as positional
parameters (quoted by the transport), never spliced into the text. A record is
written as an *intent* (pid and start `-`) before the process is spawned and
completed right after, atomically (written aside, then renamed); a listing
that finds an intent adopts the process carrying its launch token in its
environment, counts a young intent as an instance starting (its spawn may be
running right now, from a controller killed a moment ago) and forgets an old
one whose process never appeared. A process is named by its pid *and* its start
time (field 22 of /proc/PID/stat): nothing here signals a pid that now belongs
to another process.

Output is one record a line, first word its kind; `parse_listing` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

LAUNCH_VARIABLE = "STAGEWISE_INSTANCE_LAUNCH"
INTENT_PATIENCE = 30
"""Seconds an intent may wait for its process before a listing forgets it."""

_PRELUDE = r"""
set -u
root=$1; service=$2; shift 2
case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root#"~/"} ;; esac
base=$root/$service
alive() { # pid start: the process runs and is the one recorded
  [ -r "/proc/$1/stat" ] || return 1
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  r=${s##*) }
  set -- "$2" $r
  [ "$2" != Z ] && [ "$2" != X ] && [ "${21}" = "$1" ]
}
start_of() { # pid -> its start time
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  r=${s##*) }
  set -- $r
  echo "${20}"
}
"""

LIST = _PRELUDE + r"""
now=$(date +%s)
echo "T $now"
for f in "$base"/instances/*.rec; do
  [ -e "$f" ] || continue
  read -r id seq rel port token pid start created < "$f" || continue
  stopping=0; [ -e "$base/instances/$id.stopping" ] && stopping=1
  if [ "$pid" = - ]; then
    found=
    for p in /proc/[0-9]*; do
      tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qx "STAGEWISE_INSTANCE_LAUNCH=$token" || continue
      q=${p#/proc/}
      s=$(cat "$p/stat" 2>/dev/null) || continue
      r=${s##*) }; set -- $r
      [ "$4" = "$q" ] || continue
      found="$q ${20}"; break
    done
    if [ -n "$found" ]; then
      set -- $found
      printf '%s %s %s %s %s %s %s %s\n' "$id" "$seq" "$rel" "$port" "$token" "$1" "$2" "$created" > "$f.tmp"
      mv "$f.tmp" "$f"
      pid=$1; start=$2
      echo "A $id $pid"
    elif [ $((now - created)) -gt "$INTENT_PATIENCE" ]; then
      rm -f "$f" "$base/instances/$id.stopping"
      echo "F $id"
      continue
    else
      echo "I $id $seq $rel $port - - $created $stopping"
      continue
    fi
  fi
  if alive "$pid" "$start"; then
    echo "I $id $seq $rel $port $pid $start $created $stopping"
  else
    last=$(tail -n 1 "$base/logs/$id.log" 2>/dev/null | tr -d '\r' | cut -c1-300)
    rm -f "$f" "$base/instances/$id.stopping"
    echo "D $id $seq $rel $pid $stopping $last"
  fi
done
""".replace("$INTENT_PATIENCE", str(INTENT_PATIENCE))

SPAWN = _PRELUDE + r"""
id=$1; seq=$2; rel=$3; token=$4; nenv=$5; shift 5
dir=$base/releases/$rel
mkdir -p "$base/instances" "$base/logs" "$dir" || exit 3
used=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _ local _ st _; do
  [ "$st" = 0A ] && echo $((0x${local##*:})); done)
for f in "$base"/instances/*.rec; do [ -e "$f" ] && { read -r _ _ _ p _ < "$f"; used="$used $p"; }; done
port=
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
  p=$((20000 + n % 40000))
  case " $(echo $used) " in *" $p "*) continue ;; esac
  port=$p; break
done
[ -n "$port" ] || { echo "no free port" >&2; exit 4; }
sub() { # text: every {port} replaced
  out=; rest=$1
  while :; do
    case $rest in
      *"{port}"*) out=$out${rest%%"{port}"*}$port; rest=${rest#*"{port}"} ;;
      *) break ;;
    esac
  done
  printf '%s.' "$out$rest"
}
i=0; count=$#
while [ $i -lt $count ]; do
  a=$(sub "$1"); shift; set -- "$@" "${a%.}"; i=$((i + 1))
done
now=$(date +%s)
rec=$base/instances/$id.rec
printf '%s %s %s %s %s - - %s\n' "$id" "$seq" "$rel" "$port" "$token" "$now" > "$rec.tmp" || exit 3
mv "$rec.tmp" "$rec" || exit 3
cd "$dir" || exit 3
log=$base/logs/$id.log
# The arguments are the environment's assignments (nenv of them, NAME=value), then the program's argv:
# `env` takes both. setsid makes the instance the leader of its own session and process group.
STAGEWISE_INSTANCE_LAUNCH=$token setsid env -- "$@" < /dev/null >> "$log" 2>&1 &
pid=$!
start=$(start_of "$pid") || start=-
if [ "$start" = - ]; then
  rm -f "$rec"
  echo "E $id the process exited at once; log: $(tail -n 1 "$log" 2>/dev/null | cut -c1-300)"
  exit 0
fi
printf '%s %s %s %s %s %s %s %s\n' "$id" "$seq" "$rel" "$port" "$token" "$pid" "$start" "$now" \
  > "$rec.tmp" && mv "$rec.tmp" "$rec"
echo "S $id $port $pid $start $now"
"""

STOP = _PRELUDE + r"""
tenths=$1; shift
pending=
for id; do
  f=$base/instances/$id.rec
  [ -e "$f" ] || continue
  read -r _ _ _ _ _ pid start _ < "$f" || continue
  [ "$pid" = - ] && continue
  : > "$base/instances/$id.stopping"
  if alive "$pid" "$start"; then
    kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    pending="$pending $id:$pid:$start"
  else
    rm -f "$f" "$base/instances/$id.stopping"; echo "G $id"
  fi
done
wait_gone() { # tenths of a second
  t=0
  while [ $t -lt "$1" ]; do
    left=
    for e in $pending; do
      p=${e#*:}; alive "${p%%:*}" "${p#*:}" && left="$left $e"
    done
    pending=$left
    [ -z "$pending" ] && return 0
    sleep 0.1; t=$((t + 1))
  done
}
wait_gone "$tenths"
for e in $pending; do p=${e#*:}; kill -KILL "-${p%%:*}" 2>/dev/null || kill -KILL "${p%%:*}" 2>/dev/null; done
survivors=$pending
pending=$survivors
wait_gone 30
for e in $survivors; do
  case " $pending " in *" $e "*) echo "L ${e%%:*}"; continue ;; esac
done
for id; do
  f=$base/instances/$id.rec
  [ -e "$f" ] || continue
  read -r _ _ _ _ _ pid _ _ < "$f"
  [ "$pid" = - ] && continue
  case " $pending " in *" $id:"*) continue ;; esac
  rm -f "$f" "$base/instances/$id.stopping"; echo "G $id"
done
"""

CHECK_RELEASE = _PRELUDE + r"""
rel=$1
if [ -f "$base/releases/$rel/.stagewise-artifact" ]; then
  echo "H $(cat "$base/releases/$rel/.stagewise-artifact")"
elif [ -d "$base/releases/$rel" ]; then
  echo "P"
else
  echo "N"
fi
"""

UNPACK = _PRELUDE + r"""
rel=$1; sha=$2
mkdir -p "$base/releases" || exit 3
tmp=$(mktemp -d "$base/releases/.incoming.XXXXXX") || exit 3
cat > "$tmp.tar.gz" || { rm -rf "$tmp" "$tmp.tar.gz"; exit 3; }
got=$(sha256sum < "$tmp.tar.gz" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
  rm -rf "$tmp" "$tmp.tar.gz"; echo "X $got"; exit 0
fi
tar -xzf "$tmp.tar.gz" -C "$tmp" || { rm -rf "$tmp" "$tmp.tar.gz"; exit 5; }
rm -f "$tmp.tar.gz"
echo "$sha" > "$tmp/.stagewise-artifact"
# A rename is atomic: the release appears whole or not at all (a concurrent unpack of it loses, harmlessly).
if mv -T "$tmp" "$base/releases/$rel" 2>/dev/null; then
  echo "U"
else
  rm -rf "$tmp"; echo "H $(cat "$base/releases/$rel/.stagewise-artifact" 2>/dev/null)"
fi
"""

PRUNE = _PRELUDE + r"""
keep=$1; shift
cd "$base/releases" 2>/dev/null || exit 0
running=
for f in "$base"/instances/*.rec; do [ -e "$f" ] && { read -r _ _ r _ < "$f"; running="$running $r"; }; done
n=0
for rel in $(ls -1t); do
  [ -d "$rel" ] || continue
  n=$((n + 1))
  case " $* $running " in *" $rel "*) continue ;; esac
  [ $n -le "$keep" ] && continue
  rm -rf "./$rel" && echo "R $rel"
done
"""

PREFLIGHT = _PRELUDE + r"""
program=$1; need_kb=$2
echo "T $(date +%s)"
case $program in
  "") echo "C -" ;;
  */*) if [ -x "$program" ]; then echo "C $program"; else echo "C !"; fi ;;
  *) found=$(command -v "$program" 2>/dev/null) && echo "C $found" || echo "C !" ;;
esac
if mkdir -p "$base/releases" 2>/dev/null && : > "$base/.write-test" 2>/dev/null; then
  rm -f "$base/.write-test"; echo "W 1"
else
  echo "W 0"
fi
avail=$(df -Pk "$base/releases" 2>/dev/null | tail -n 1 | while read -r _ _ _ a _; do echo "$a"; done)
echo "D ${avail:-0} $need_kb"
"""


@dataclass
class Listed:
    """One instance as a host's listing shows it."""

    id: str
    seq: int
    release: str
    port: int
    pid: int | None
    """None for an intent whose process has not appeared yet."""
    start: int | None
    created: float
    stopping: bool


@dataclass
class Listing:
    now: float
    instances: dict[str, Listed]
    dead: list[tuple[str, str, bool, str]]
    """(id, release, was stopping, last log line) of instances that ended since the last listing."""
    notes: list[str]


def parse_listing(text: str) -> Listing:
    listing = Listing(now=0.0, instances={}, dead=[], notes=[])
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = rest.split(" ")
        if kind == "T" and fields[0].isdigit():
            listing.now = float(fields[0])
        elif kind == "I" and len(fields) >= 8:
            listing.instances[fields[0]] = Listed(
                id=fields[0], seq=int(fields[1]), release=fields[2], port=int(fields[3]),
                pid=None if fields[4] == "-" else int(fields[4]),
                start=None if fields[5] == "-" else int(fields[5]),
                created=float(fields[6]), stopping=fields[7] == "1")
        elif kind == "D" and len(fields) >= 5:
            listing.dead.append((fields[0], fields[2], fields[4] == "1", " ".join(fields[5:])))
        elif kind == "A":
            listing.notes.append(f"instance {fields[0]} (pid {fields[1]}) was started but not recorded when its "
                                 "controller stopped; adopted")
        elif kind == "F":
            listing.notes.append(f"instance {fields[0]} was being started when its controller stopped, and does "
                                 "not run; forgotten")
    return listing
