package s3test

import (
	"net"
	"net/url"
	"testing"
	"time"
)

func TestStartStop(t *testing.T) {
	srv := Start(t)
	u, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if h := u.Hostname(); h != "127.0.0.1" {
		t.Fatalf("server listens on %s, want loopback", h)
	}
	c, err := net.DialTimeout("tcp", u.Host, time.Second)
	if err != nil {
		t.Fatalf("server does not answer: %v", err)
	}
	c.Close()
	srv.Stop()
	srv.Stop() // a second Stop (and the cleanup's) is harmless
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Fatal("server still answers after Stop")
	}
}
