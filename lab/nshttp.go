package lab

import (
	"context"
	"net"
	"net/http"
	"time"
)

// HTTPClient is an HTTP client whose connections are made inside network namespace ns,
// for tests that talk to a server listening in a lab node (a Prometheus, a /metrics).
func HTTPClient(ns string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = InNetNS(ns, func() error {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
}
