package listen

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
)

// BindHint is what to do about err, the failure to listen on addr, as a
// "; …" to put after it: for the three ways a deployment meets, the port
// held by another server, an address no interface has, and a port below
// 1024 without the capability to bind it; "" for any other error. The
// kernel's words alone ("bind: address already in use") are the most
// asked question of every DNS server's tracker.
func BindHint(addr string, err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		if _, rest, ok := strings.Cut(addr, "://"); ok { // a DoH listener's http://HOST:PORT
			addr = rest
		}
		_, port, _ := net.SplitHostPort(addr)
		return fmt.Sprintf("; another process holds the port (another dnsfence, systemd-resolved's stub on 127.0.0.53:53 and 127.0.0.54:53, dnsmasq: a wildcard address meets them all): `ss -lntup 'sport = :%s'` names it", port)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "; no interface of this host has that address (yet): check `ip addr`, start dnsfence once the address is up (systemd: After=network-online.target), or listen on 0.0.0.0 or [::] to serve every address the host has, now or later"
	case errors.Is(err, syscall.EACCES):
		return "; a port below 1024 needs CAP_NET_BIND_SERVICE (the shipped systemd unit's AmbientCapabilities=CAP_NET_BIND_SERVICE, or setcap cap_net_bind_service=+ep on the binary), or the sysctl net.ipv4.ip_unprivileged_port_start lowered (a Kubernetes pod's securityContext.sysctls), or a port of 1024 or more with 53 mapped to it (docker run -p 53:5353/udp)"
	}
	return ""
}
