package servicelb

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// proxyV2Signature starts every PROXY protocol v2 header.
var proxyV2Signature = []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// proxyHeader is the PROXY protocol header (version 1: text, version 2:
// binary) that tells a backend who the client src is and which address dst
// it connected to.
func proxyHeader(version int, src, dst net.Addr) ([]byte, error) {
	s, err := netip.ParseAddrPort(src.String())
	if err != nil {
		return nil, err
	}
	d, err := netip.ParseAddrPort(dst.String())
	if err != nil {
		return nil, err
	}
	sa, da := s.Addr().Unmap(), d.Addr().Unmap()
	if sa.Is4() != da.Is4() {
		return nil, fmt.Errorf("client %s and listener %s are of different families", s, d)
	}
	switch version {
	case 1:
		family := "TCP4"
		if !sa.Is4() {
			family = "TCP6"
		}
		return []byte(fmt.Sprintf("PROXY %s %s %s %d %d\r\n", family, sa, da, s.Port(), d.Port())), nil
	case 2:
		h := append([]byte(nil), proxyV2Signature...)
		h = append(h, 0x21) // version 2, command PROXY
		if sa.Is4() {
			h = append(h, 0x11) // TCP over IPv4
			h = binary.BigEndian.AppendUint16(h, 12)
		} else {
			h = append(h, 0x21) // TCP over IPv6
			h = binary.BigEndian.AppendUint16(h, 36)
		}
		h = append(h, sa.AsSlice()...)
		h = append(h, da.AsSlice()...)
		h = binary.BigEndian.AppendUint16(h, s.Port())
		h = binary.BigEndian.AppendUint16(h, d.Port())
		return h, nil
	}
	return nil, fmt.Errorf("PROXY protocol version %d", version)
}
