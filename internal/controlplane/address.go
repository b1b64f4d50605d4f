package controlplane

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
)

// DefaultAddress returns the first IPv4 address of the interface that
// holds the default route, or else the first global unicast IPv4 address.
func DefaultAddress() (net.IP, error) {
	if f, err := os.Open("/proc/net/route"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 2 && fields[1] == "00000000" {
				if ifi, err := net.InterfaceByName(fields[0]); err == nil {
					if ip := firstIPv4(ifi); ip != nil {
						return ip, nil
					}
				}
			}
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifs {
		if ip := firstIPv4(&ifs[i]); ip != nil {
			return ip, nil
		}
	}
	return nil, errors.New("no global IPv4 address on this host; give --advertise-address")
}

func firstIPv4(ifi *net.Interface) net.IP {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.To4()
		}
	}
	return nil
}
