package resolver

// Bounds of limits.udp_receive_buffer and udp_send_buffer, in bytes: below
// one large datagram the socket is useless, and setsockopt takes a C int.
const (
	minUDPBuffer = 4096
	maxUDPBuffer = 1 << 30
)

// upstreamReceiveBuffer is asked for each upstream UDP socket, in bytes: up
// to socketMaxQueries answers may arrive on one at once, about 2 KiB each
// to the kernel, ten times what its usual 208 KiB holds.
const upstreamReceiveBuffer = 2 << 20
