package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkProxy_Write compares a write through the primary's proxy with
// one through a replica's, which adds a hop to the primary's proxy; on
// loopback the replica's should cost at most about twice as much.
func BenchmarkProxy_Write(b *testing.B) {
	c := newCluster(b, nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections)
	for _, bb := range []struct{ name, url string }{{"primary", c.primary.URL}, {"replica", c.replica.URL}} {
		b.Run(bb.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Post(bb.url+"/items", "application/json", strings.NewReader(`{"name":"a"}`))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
