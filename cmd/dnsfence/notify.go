package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"go.uber.org/zap"
)

// notifySystemd tells the service manager dnsfence runs under what it is
// doing (sd_notify(3)): "READY=1" once every listener answers,
// "STOPPING=1" when a stop begins. systemd sets NOTIFY_SOCKET for a unit
// of Type=notify, and starts the units ordered after it (a name server is
// ordered before nss-lookup.target) only on READY=1: with Type=simple it
// started them at once, while dnsfence was still loading its lists and
// nothing answered on port 53. Without NOTIFY_SOCKET (a shell, a
// container, Type=simple) it does nothing. A failure is logged, not
// fatal: dnsfence serves all the same, and systemd says the start timed
// out.
func notifySystemd(log *zap.Logger, state string) {
	if err := sdNotify(os.Getenv("NOTIFY_SOCKET"), state); err != nil {
		log.Warn("telling systemd", zap.String("state", state), zap.Error(err))
	}
}

// sdNotify sends state to the datagram socket at path, a file or an
// abstract socket ("@name", which the net package maps to Linux's
// abstract namespace); an empty path sends nothing.
func sdNotify(path, state string) error {
	if path == "" {
		return nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return fmt.Errorf("NOTIFY_SOCKET %q: not a socket path or an abstract socket name", path)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
