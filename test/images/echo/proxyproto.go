package main

// A listener that reads the PROXY protocol header (v1 or v2) a connection
// from a balancer starts with and reports the client it names as the
// connection's remote address: what a backend behind a balancer with the
// PROXY protocol sees. Connections without the header are served as they
// are (the kubelet's probes).

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

var proxyV2Signature = []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

type proxyListener struct{ net.Listener }

type proxyConn struct {
	net.Conn
	r      *bufio.Reader
	remote net.Addr
}

func (c *proxyConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *proxyConn) RemoteAddr() net.Addr       { return c.remote }

func (l proxyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		r := bufio.NewReader(c)
		start, err := r.Peek(6)
		if err != nil {
			c.Close()
			continue
		}
		if !bytes.Equal(start, proxyV2Signature[:6]) && string(start) != "PROXY " {
			// A direct client (the kubelet's probes): as it is.
			return &proxyConn{Conn: c, r: r, remote: c.RemoteAddr()}, nil
		}
		remote, err := readProxyHeader(r)
		if err != nil {
			c.Close()
			continue
		}
		return &proxyConn{Conn: c, r: r, remote: remote}, nil
	}
}

func readProxyHeader(r *bufio.Reader) (net.Addr, error) {
	start, err := r.Peek(12)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(start, proxyV2Signature) {
		head := make([]byte, 16)
		if _, err := io.ReadFull(r, head); err != nil {
			return nil, err
		}
		body := make([]byte, binary.BigEndian.Uint16(head[14:16]))
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		switch head[13] {
		case 0x11: // TCP over IPv4
			ip, _ := netip.AddrFromSlice(body[0:4])
			return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[8:10]))), nil
		case 0x21: // TCP over IPv6
			ip, _ := netip.AddrFromSlice(body[0:16])
			return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[32:34]))), nil
		}
		return nil, fmt.Errorf("PROXY v2 family %#x", head[13])
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	f := strings.Fields(line) // PROXY TCP4 src dst sport dport
	if len(f) != 6 || f[0] != "PROXY" {
		return nil, fmt.Errorf("not a PROXY header: %q", line)
	}
	ip, err := netip.ParseAddr(f[2])
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(f[4])
	if err != nil {
		return nil, err
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))), nil
}
