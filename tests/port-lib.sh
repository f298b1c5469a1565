# port-lib.sh - a free TCP port for a test's tomed (sourced, not run).

command -v curl >/dev/null 2>&1 || { echo "FAIL: curl is missing"; exit 1; }

# free_port [N]: a TCP port nobody listens on, spread by the test's pid and
# N so that tests running at once pick different ones, and below the
# kernel's ephemeral ports (ip_local_port_range): any process's outgoing
# connection may hold one of those at any moment, and tomed's listen on it
# then fails with "Address already in use" (seen in a clean-clone check).
free_port() {
    first=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null) || first=
    [ "${first:-0}" -gt 12000 ] 2>/dev/null || first=32768
    span=$((first - 10000))
    p=$((10000 + ($$ * 7 + ${1:-0}) % span))
    while curl -s -o /dev/null --connect-timeout 1 "http://127.0.0.1:$p/" 2>/dev/null ||
        [ $? -ne 7 ]; do
        p=$((10000 + (p - 10000 + 1) % span))
    done
    echo "$p"
}
