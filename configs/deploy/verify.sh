#!/usr/bin/env bash
# Checks the deployment files that a YAML parse cannot:
#
#   1. systemd/dnsfence.service with `systemd-analyze verify`. verify rejects
#      a unit whose ExecStart binary does not exist, and CI has no
#      /usr/local/bin/dnsfence, so the binary is built into a temp dir and
#      verified through a copy of the unit with that path substituted (the
#      copy keeps the name dnsfence.service). verify only warns on unknown
#      keys or bad values and still exits 0, so any line of its output that
#      names the unit is a failure too. Every absolute Exec*= command must
#      also be executable (verify checks ExecStart= only).
#   2. The unit's hardening with `systemd-analyze security --offline`: the
#      exposure score must stay at most 2.0 (it is 1.6), so a dropped
#      Protect*= line fails.
#   3. The container image's /etc/dnsfence, staged exactly as the Dockerfile
#      lays it out, with `dnsfence check`.
#   4. The remote-lists example (dnsfence-remote-lists.yaml, which
#      kubernetes/daemonset-remote-lists.yaml mounts), with `dnsfence check`.
#
# Needs no running systemd (works as root in a container). Installs the
# Debian packages `systemd` (systemd-analyze) and `procps` (/bin/kill)
# when they are missing.
#
#   bash configs/deploy/verify.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"

fail=0
problem() { echo "verify: $*" >&2; fail=1; }

# systemd-analyze, and /bin/kill for the unit's ExecReload= (procps).
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
[ -x /bin/kill ] || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
	echo "verify: apt-get install ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "verify: building dnsfence into $tmp/bin"
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$tmp/bin/dnsfence" ./cmd/dnsfence
"$tmp/bin/dnsfence" -version

# 1. systemd-analyze verify on a copy pointing at the fresh binary.
unit=configs/deploy/systemd/dnsfence.service
mkdir -p "$tmp/unit"
sed "s#/usr/local/bin/dnsfence#$tmp/bin/dnsfence#g" "$unit" >"$tmp/unit/dnsfence.service"
grep -q "$tmp/bin/dnsfence" "$tmp/unit/dnsfence.service" || problem "$unit: no /usr/local/bin/dnsfence to substitute"

echo "verify: systemd-analyze verify $unit"
if ! out=$(systemd-analyze verify "$tmp/unit/dnsfence.service" 2>&1); then
	problem "systemd-analyze verify failed"
fi
[ -n "$out" ] && echo "$out" >&2
if grep -q 'dnsfence' <<<"$out"; then
	problem "systemd-analyze verify reported problems in $unit (above)"
fi

while IFS= read -r cmd; do
	[ -x "$cmd" ] || problem "$unit: $cmd (from an Exec line) is not executable here"
done < <(sed -n 's/^Exec[A-Za-z]*=[-+!@:]*\(\/[^ ]*\).*/\1/p' "$tmp/unit/dnsfence.service")

for key in DynamicUser AmbientCapabilities CapabilityBoundingSet NoNewPrivileges ProtectSystem \
	ConfigurationDirectory ExecStartPre ExecReload; do
	grep -q "^$key=" "$unit" || problem "$unit: $key= is missing"
done

# 2. Hardening score (systemd >= 250 can score a unit file offline).
if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
	echo "verify: systemd-analyze security --offline=yes --threshold=20"
	if ! out=$(systemd-analyze security --offline=yes --threshold=20 --no-pager "$tmp/unit/dnsfence.service" 2>&1); then
		echo "$out" >&2
		problem "$unit: exposure above 2.0"
	else
		grep 'Overall exposure' <<<"$out" || true
	fi
else
	echo "verify: this systemd-analyze has no security --offline; hardening score skipped"
fi

# 3. The image's /etc/dnsfence, as configs/deploy/Dockerfile builds it.
etc="$tmp/etc/dnsfence"
mkdir -p "$etc"
cp configs/deploy/dnsfence-container.yaml "$etc/dnsfence.yaml"
cp -r configs/lists configs/networks "$etc/"
echo "verify: dnsfence check of the container configuration"
"$tmp/bin/dnsfence" check -config "$etc/dnsfence.yaml" || problem "configs/deploy/dnsfence-container.yaml does not pass dnsfence check"

# 4. The remote-lists example of kubernetes/daemonset-remote-lists.yaml,
# with the ranges where the pod has them (its sources are not fetched).
remote="$tmp/remote"
mkdir -p "$remote"
cp configs/deploy/dnsfence-remote-lists.yaml "$remote/dnsfence.yaml"
cp -r configs/networks "$remote/"
echo "verify: dnsfence check of the remote-lists configuration"
"$tmp/bin/dnsfence" check -config "$remote/dnsfence.yaml" || problem "configs/deploy/dnsfence-remote-lists.yaml does not pass dnsfence check"

if [ "$fail" -ne 0 ]; then
	echo "verify: FAILED" >&2
	exit 1
fi
echo "verify: OK"
